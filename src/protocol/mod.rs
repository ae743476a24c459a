//! OAuth 2.0 / OpenID Connect wire types: request parsing at the edge (`Form`,
//! `TokenRequest`) and the standard error codes (`OAuthError`).
//!
//! Parse, don't validate: a request leaves this module as a closed enum with its credentials
//! in redacting wrappers, and nothing downstream looks at raw strings again. This module does
//! no I/O and knows nothing of hyper: it takes bytes and header values.

mod error;
pub mod form;
mod token_request;

pub use error::OAuthError;
pub use form::{Form, FormError};
pub use token_request::{
    BasicCredentials, ClientAuth, Credential, JWT_BEARER_ASSERTION, REPEATABLE, RequestError,
    TokenRequest, parse_basic_auth,
};
