//! DNS wire format: checked views over bytes that never allocate and never
//! panic, and a builder that writes into a caller's buffer.
//!
//! Untrusted bytes go through a checked constructor (`Header::new_checked`,
//! `Name::parse`, `Message::parse`); once it succeeds, accessors cannot fail.

mod builder;
mod error;
mod header;
mod message;
mod name;
mod quick;
mod types;

pub use builder::{write_empty_reply, write_query, MessageBuilder, OptSpec, Section, OPT_LEN};
pub use error::WireError;
pub use header::{flags, Header, HEADER_LEN};
pub use message::{Edns, EdnsOptions, Message, MessageError, Question, Record, Records, Sections, EDNS_DO};
pub use name::{encode_name, DisplayName, Labels, Name, MAX_LABEL_LEN, MAX_NAME_LEN, MAX_POINTER_HOPS};
pub use quick::{quick_query, QuickEdns, QuickQuery};
pub use types::{Class, Opcode, Rcode, Rtype};

#[cfg(test)]
mod tests;
