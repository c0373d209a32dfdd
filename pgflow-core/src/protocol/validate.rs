//! Checks a decoded payload must pass before a handler acts on it: the
//! [`Validate`] trait, its [`ValidationError`], the size limits, and the
//! field checks the message types share (names, texts, scores, relative paths).

use crate::consumer::HandlerError;

/// Longest name (instance id, agent type, namespace, provider, language,
/// model, ...), in bytes. Equal to the envelope's instance-name limit.
pub const MAX_NAME_LEN: usize = crate::message::MAX_INSTANCE_LEN;
/// Longest free text (reasons, rationales, descriptions, error messages), in bytes.
pub const MAX_TEXT_LEN: usize = 16 * 1024;
/// Largest piece of code (a change, a code pattern side, submitted code), in bytes.
pub const MAX_CODE_LEN: usize = 1024 * 1024;
/// Longest relative file path, in bytes.
pub const MAX_PATH_LEN: usize = 1024;
/// Longest component of a relative file path (a directory or file name),
/// in bytes: what common file systems (ext4, XFS, btrfs, APFS, NTFS) allow.
pub const MAX_PATH_COMPONENT_LEN: usize = 255;
/// Largest open JSON object (a Genesis rule), serialized, in bytes.
pub const MAX_RULE_LEN: usize = 64 * 1024;
/// Most entries in a list or map of a payload (votes, models, findings).
pub const MAX_ITEMS: usize = 10_000;

/// Why a payload was refused: the field (a dotted path such as
/// `code_change.file`) and the reason.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {reason}")]
#[non_exhaustive]
pub struct ValidationError {
    /// The offending field, as a dotted path from the payload root.
    pub field: String,
    /// What is wrong with it.
    pub reason: String,
}

impl ValidationError {
    /// A refusal of `field` for `reason`.
    pub fn new(field: impl Into<String>, reason: impl Into<String>) -> Self {
        Self {
            field: field.into(),
            reason: reason.into(),
        }
    }

    /// The same refusal, seen from the struct that holds `parent`
    /// (`file` becomes `code_change.file`).
    pub fn within(mut self, parent: &str) -> Self {
        self.field = format!("{parent}.{}", self.field);
        self
    }
}

impl From<ValidationError> for crate::Error {
    /// A payload that fails validation is an invalid message.
    fn from(e: ValidationError) -> Self {
        crate::Error::InvalidMessage(e.to_string())
    }
}

impl From<ValidationError> for HandlerError {
    /// No retry can make an invalid payload valid: the failure is fatal.
    fn from(e: ValidationError) -> Self {
        HandlerError::fatal(format!("invalid payload: {e}"))
    }
}

/// A payload with rules beyond its shape (ranges, sizes, safe paths).
pub trait Validate {
    /// Ok when every field is within the protocol's rules, or the first
    /// field that is not, with the reason.
    fn validate(&self) -> Result<(), ValidationError>;

    /// The instance this message speaks for, when it names its own sender
    /// (a vote's voter, a proposal's proposer, a request's requester):
    /// [`decode`](super::decode) accepts it only when the database recorded
    /// that instance as its source ([`super::sender`]). `None` for messages
    /// that name an instance as their subject or target.
    fn speaker(&self) -> Option<&str> {
        None
    }
}

/// The result of one field check.
pub(crate) type Check = Result<(), ValidationError>;

/// A name: 1-[`MAX_NAME_LEN`] bytes, no control characters.
pub(crate) fn name(field: &str, value: &str) -> Check {
    if value.is_empty() {
        return Err(ValidationError::new(field, "must not be empty"));
    }
    if value.len() > MAX_NAME_LEN {
        return Err(ValidationError::new(
            field,
            format!("must be at most {MAX_NAME_LEN} bytes, got {}", value.len()),
        ));
    }
    no_control(field, value)
}

/// A free text that must say something: 1-[`MAX_TEXT_LEN`] bytes.
pub(crate) fn text(field: &str, value: &str) -> Check {
    if value.trim().is_empty() {
        return Err(ValidationError::new(field, "must not be empty"));
    }
    bounded(field, value, MAX_TEXT_LEN)
}

/// A string of at most `max` bytes (empty allowed), without a NUL
/// character: PostgreSQL can store none in `text` or `jsonb`, so a payload
/// carrying one could never be sent or stored.
pub(crate) fn bounded(field: &str, value: &str, max: usize) -> Check {
    if value.len() > max {
        return Err(ValidationError::new(
            field,
            format!("must be at most {max} bytes, got {}", value.len()),
        ));
    }
    if let Some(at) = value.find('\0') {
        return Err(ValidationError::new(
            field,
            format!("must not contain a NUL character (found at byte {at}); PostgreSQL cannot store one"),
        ));
    }
    Ok(())
}

/// A piece of code: at most [`MAX_CODE_LEN`] bytes.
pub(crate) fn code(field: &str, value: &str) -> Check {
    bounded(field, value, MAX_CODE_LEN)
}

/// An optional text: when present, as [`text`].
pub(crate) fn opt_text(field: &str, value: Option<&str>) -> Check {
    value.map_or(Ok(()), |v| text(field, v))
}

/// A finite number `>= 0`.
pub(crate) fn non_negative(field: &str, value: f64) -> Check {
    if !value.is_finite() || value < 0.0 {
        return Err(ValidationError::new(
            field,
            format!("must be a finite number >= 0, got {value}"),
        ));
    }
    Ok(())
}

/// An optional number: when present, as [`non_negative`].
pub(crate) fn opt_non_negative(field: &str, value: Option<f64>) -> Check {
    value.map_or(Ok(()), |v| non_negative(field, v))
}

/// A fraction, confidence or rate: finite and in `[0, 1]`.
pub(crate) fn unit_interval(field: &str, value: f64) -> Check {
    if !(0.0..=1.0).contains(&value) {
        return Err(ValidationError::new(
            field,
            format!("must be in [0, 1], got {value}"),
        ));
    }
    Ok(())
}

/// A list or map of at most [`MAX_ITEMS`] entries.
pub(crate) fn items(field: &str, len: usize) -> Check {
    if len > MAX_ITEMS {
        return Err(ValidationError::new(
            field,
            format!("must have at most {MAX_ITEMS} entries, got {len}"),
        ));
    }
    Ok(())
}

/// A file path relative to a workspace that cannot leave it: not empty, not
/// absolute (`/x`, `\x`, `C:x`), no `..` component, no control characters,
/// naming a file (not ending in a separator, `.` or `..`), no component
/// longer than [`MAX_PATH_COMPONENT_LEN`] bytes (a file system refuses such
/// a name when the change is applied). Both `/` and `\` count as
/// separators, whatever the platform.
pub(crate) fn relative_path(field: &str, value: &str) -> Check {
    let refuse = |reason: &str| {
        Err(ValidationError::new(
            field,
            format!("{reason} (got {value:?}); give a path relative to the workspace"),
        ))
    };
    if value.is_empty() {
        return refuse("must not be empty");
    }
    if value.len() > MAX_PATH_LEN {
        return Err(ValidationError::new(
            field,
            format!("must be at most {MAX_PATH_LEN} bytes, got {}", value.len()),
        ));
    }
    no_control(field, value)?;
    if value.starts_with('/') || value.starts_with('\\') {
        return refuse("is an absolute path");
    }
    let bytes = value.as_bytes();
    if bytes.len() >= 2 && bytes[0].is_ascii_alphabetic() && bytes[1] == b':' {
        return refuse("starts with a drive prefix");
    }
    let mut parts = value.split(['/', '\\']).peekable();
    while let Some(part) = parts.next() {
        if part == ".." {
            return refuse("contains a '..' component, which could leave the workspace");
        }
        if part.len() > MAX_PATH_COMPONENT_LEN {
            return Err(ValidationError::new(
                field,
                format!(
                    "has a component of {} bytes; a file or directory name may have at most \
                     {MAX_PATH_COMPONENT_LEN}",
                    part.len()
                ),
            ));
        }
        if parts.peek().is_none() && (part.is_empty() || part == ".") {
            return refuse("names a directory, not a file");
        }
    }
    Ok(())
}

/// No control characters (they garble logs and terminals).
fn no_control(field: &str, value: &str) -> Check {
    if value.chars().any(char::is_control) {
        return Err(ValidationError::new(
            field,
            "must not contain control characters",
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn relative_paths_are_accepted() {
        for p in ["src/lib.rs", "lib.rs", "./src/a.ex", "a/b/c.txt", "..."] {
            assert!(relative_path("file", p).is_ok(), "{p}");
        }
    }

    #[test]
    fn escaping_paths_are_refused_with_a_reason() {
        for (p, why) in [
            ("../etc/passwd", "'..'"),
            ("src/../../etc/passwd", "'..'"),
            ("src\\..\\..\\x", "'..'"),
            ("..", "'..'"),
            ("/etc/passwd", "absolute"),
            ("\\\\server\\share\\x", "absolute"),
            ("C:\\Windows\\x", "drive"),
            ("", "empty"),
            ("src/", "directory"),
            ("src/.", "directory"),
            ("a\nb", "control"),
        ] {
            let err = relative_path("code_change.file", p).unwrap_err();
            assert_eq!(err.field, "code_change.file");
            assert!(err.to_string().contains(why), "{p:?}: {err}");
        }
        assert!(relative_path("f", &"a".repeat(MAX_PATH_LEN + 1)).is_err());
    }

    #[test]
    fn each_path_component_is_bounded() {
        let longest = "n".repeat(MAX_PATH_COMPONENT_LEN);
        assert!(relative_path("f", &format!("src/{longest}")).is_ok());
        for p in [
            format!("src/{longest}x"),
            format!("{longest}x/lib.rs"),
            format!("a\\{longest}x\\b"),
        ] {
            let err = relative_path("code_change.file", &p).unwrap_err();
            assert!(err.reason.contains("component of 256 bytes"), "{err}");
        }
    }

    #[test]
    fn nul_characters_are_refused_in_every_text() {
        for check in [
            code("change", "fn a() {}\0"),
            text("reason", "a\0b"),
            bounded("summary", "\0", 10),
        ] {
            let err = check.unwrap_err();
            assert!(err.reason.contains("NUL"), "{err}");
        }
        assert!(code("change", "tabs\tand\nnewlines are fine").is_ok());
    }

    #[test]
    fn numbers_are_checked() {
        assert!(unit_interval("c", 0.0).is_ok());
        assert!(unit_interval("c", 1.0).is_ok());
        for bad in [-0.01, 1.01, f64::NAN, f64::INFINITY] {
            assert!(unit_interval("c", bad).is_err(), "{bad}");
        }
        assert!(non_negative("s", 8.0).is_ok());
        for bad in [-1.0, f64::NAN, f64::INFINITY, f64::NEG_INFINITY] {
            assert!(non_negative("s", bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn names_and_texts_are_bounded() {
        assert!(name("n", "singularity_1").is_ok());
        assert!(name("n", "").is_err());
        assert!(name("n", &"x".repeat(MAX_NAME_LEN)).is_ok());
        assert!(name("n", &"x".repeat(MAX_NAME_LEN + 1)).is_err());
        assert!(name("n", "a\u{7}").is_err());
        assert!(text("t", "  ").is_err());
        assert!(code("c", &"x".repeat(MAX_CODE_LEN)).is_ok());
        assert!(code("c", &"x".repeat(MAX_CODE_LEN + 1)).is_err());
    }

    #[test]
    fn errors_convert_to_fatal_failures() {
        let e = ValidationError::new("file", "bad").within("code_change");
        assert_eq!(e.to_string(), "code_change.file: bad");
        let h: HandlerError = e.clone().into();
        assert!(h.is_fatal());
        assert!(h.to_string().contains("code_change.file: bad"));
        let c: crate::Error = e.into();
        assert!(matches!(c, crate::Error::InvalidMessage(_)));
    }
}
