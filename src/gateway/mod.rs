//! The failover gateway's request logic (DESIGN §1–§3): what backstop records from the
//! primary's answers in normal mode (`capture`), and what it does with a token request in
//! outage mode (`outage`). `server/` owns transport and routing; this module owns decisions.

pub mod capture;
pub mod outage;
