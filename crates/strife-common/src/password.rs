//! The password policy, checked where users are created (the gateway's `RegisterUser`) and by
//! `strife dev` for the demo passwords it makes, so both follow one rule.

use crate::limits::{MAX_PASSWORD_BYTES, MIN_PASSWORD_BYTES};

/// Checks `password` for a user named `username`: 12 to 256 characters of printable ASCII
/// (space to `~`), and not containing the user name (in any letter case). The message says
/// which rule failed, never the password.
pub fn check_password(username: &str, password: &str) -> Result<(), String> {
    // Printable ASCII only: anything else (accents, emoji, other scripts) has several byte
    // forms (composed or not) and input methods that differ between terminals, so it could
    // not be typed back reliably at the next login; control characters never can.
    if let Some(position) = password
        .chars()
        .position(|character| !(' '..='~').contains(&character))
    {
        return Err(format!(
            "password must be printable ASCII (letters, digits, punctuation, space); \
             character {} is not",
            position + 1
        ));
    }
    let length = password.len();
    if !(MIN_PASSWORD_BYTES..=MAX_PASSWORD_BYTES).contains(&length) {
        return Err(format!(
            "password must be {MIN_PASSWORD_BYTES} to {MAX_PASSWORD_BYTES} characters long (it has {length})"
        ));
    }
    if !username.is_empty()
        && password
            .to_ascii_lowercase()
            .contains(&username.to_ascii_lowercase())
    {
        return Err("password must not contain the user name".into());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_long_printable_passwords_without_the_name() {
        assert_eq!(check_password("alice", "correct horse battery"), Ok(()));
        assert_eq!(check_password("alice", "Tr0ub4dor&3!~"), Ok(()));
        assert_eq!(check_password("alice", &"x".repeat(256)), Ok(()));
    }

    #[test]
    fn refuses_short_long_non_ascii_and_the_name() {
        let refused =
            |username: &str, password: &str| check_password(username, password).unwrap_err();
        assert!(refused("alice", "elevenchars").contains("12 to 256"));
        assert!(refused("alice", &"x".repeat(257)).contains("12 to 256"));
        assert!(refused("alice", "pässwörd-long-enough").contains("printable ASCII"));
        assert!(refused("alice", "long-enough-password\n").contains("printable ASCII"));
        assert!(refused("alice", "tab\tseparated-password").contains("printable ASCII"));
        assert!(refused("alice", "my-ALICE-password").contains("user name"));
        assert!(refused("alice", "alice-password").contains("user name"));
        assert!(refused("bob", "xxbobxxxxxxxxx").contains("user name"));
    }

    #[test]
    fn the_message_never_contains_the_password() {
        for password in ["short", "pässwörd-long-enough", "alice-is-my-name"] {
            let message = check_password("alice", password).unwrap_err();
            assert!(!message.contains(password), "{message}");
        }
    }
}
