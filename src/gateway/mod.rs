//! The failover gateway's request logic (DESIGN §1–§3): what backstop does with a token
//! request in outage mode, and what it records from the primary's answers in normal mode.
//! `server/` owns transport and routing; this module owns decisions.

pub mod outage;
