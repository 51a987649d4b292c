//! Why a DNS message was rejected.

use core::fmt;

/// A reason a DNS message could not be read. Each has a short fixed name
/// for drop counters and metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum WireError {
    /// The message ends before a field it announces.
    Truncated,
    /// A label is longer than 63 bytes.
    LabelTooLong,
    /// A name is longer than 255 bytes in uncompressed form.
    NameTooLong,
    /// A label type other than a plain label or a compression pointer.
    BadLabelType,
    /// A compression pointer that points forward, to itself, or outside the message.
    BadPointer,
    /// More compression pointers in one name than a valid name can need.
    PointerLoop,
    /// A record's RDLENGTH runs past the end of the message.
    BadRdLength,
    /// An OPT record not owned by the root, or more than one OPT.
    BadOpt,
    /// An EDNS option runs past the end of the OPT record.
    BadOption,
    /// Bytes left after the last record the header announces.
    TrailingData,
    /// The output buffer is too small for what was asked.
    NoSpace,
}

impl WireError {
    /// Short snake_case name for counters.
    pub const fn name(self) -> &'static str {
        match self {
            WireError::Truncated => "truncated",
            WireError::LabelTooLong => "label_too_long",
            WireError::NameTooLong => "name_too_long",
            WireError::BadLabelType => "bad_label_type",
            WireError::BadPointer => "bad_pointer",
            WireError::PointerLoop => "pointer_loop",
            WireError::BadRdLength => "bad_rdlength",
            WireError::BadOpt => "bad_opt",
            WireError::BadOption => "bad_option",
            WireError::TrailingData => "trailing_data",
            WireError::NoSpace => "no_space",
        }
    }
}

impl fmt::Display for WireError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl std::error::Error for WireError {}
