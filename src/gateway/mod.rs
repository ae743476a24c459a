//! The failover gateway (issue 5): what backstop does with token requests beyond forwarding them.
pub mod capture;
