//! What a customer's backend may say about its signed-in user when it asks for a visitor
//! token: an id, a display name, an email address. Each is a type that can only hold a
//! valid value, so the token paths never re-check them.
//!
//! These values end up in JWT claims that the widget renders and the realtime service
//! logs, so none may carry a control character (not even a line break, unlike
//! [`Text`](crate::Text), which is copy shown in a multi-line widget).

use crate::config::MAX_TEXT_CHARS;

/// Longest `user_id` accepted from a customer backend (API.md).
pub const MAX_USER_ID_CHARS: usize = 255;

/// Why a profile value was refused. The message names the rule; the caller adds the
/// field's name in front (`email is not an email address`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum ProfileError {
    #[error("must be 1 to 255 characters without control characters")]
    UserId,
    #[error("must be at most 500 characters without control characters")]
    Field,
    #[error("is not an email address")]
    Email,
}

/// The customer's own id for its user: the `sub` of every token minted for them, and
/// the key that `revoke_sessions` with a `user_id` cuts off.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct UserId(String);

impl UserId {
    pub fn parse(input: &str) -> Result<Self, ProfileError> {
        let count = input.chars().count();
        if count == 0 || count > MAX_USER_ID_CHARS || input.chars().any(char::is_control) {
            return Err(ProfileError::UserId);
        }
        Ok(Self(input.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl From<UserId> for String {
    fn from(value: UserId) -> Self {
        value.0
    }
}

/// One line of profile text (a user's display name): at most 500 characters, no control
/// characters. An empty value means the backend said nothing, so it parses to `None`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProfileText(String);

impl ProfileText {
    pub fn parse(input: &str) -> Result<Option<Self>, ProfileError> {
        if input.chars().count() > MAX_TEXT_CHARS || input.chars().any(char::is_control) {
            return Err(ProfileError::Field);
        }
        Ok((!input.is_empty()).then(|| Self(input.to_owned())))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl From<ProfileText> for String {
    fn from(value: ProfileText) -> Self {
        value.0
    }
}

/// An email address as far as a token needs one: profile text shaped `local@domain.tld`
/// without whitespace. Deliverability is the customer's business, not ours. Empty parses
/// to `None`, like [`ProfileText`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Email(String);

impl Email {
    pub fn parse(input: &str) -> Result<Option<Self>, ProfileError> {
        let Some(text) = ProfileText::parse(input)? else {
            return Ok(None);
        };
        let shaped = input.split_once('@').is_some_and(|(local, domain)| {
            !local.is_empty()
                && domain.contains('.')
                && !domain.starts_with('.')
                && !input.contains(char::is_whitespace)
        });
        if shaped {
            Ok(Some(Self(text.0)))
        } else {
            Err(ProfileError::Email)
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl From<Email> for String {
    fn from(value: Email) -> Self {
        value.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_user_id_of_one_to_255_characters_is_accepted() {
        assert_eq!(UserId::parse("u").map(String::from), Ok("u".to_owned()));
        assert!(UserId::parse(&"é".repeat(255)).is_ok());
    }

    #[test]
    fn an_empty_overlong_or_control_character_user_id_is_refused() {
        for bad in [
            String::new(),
            "x".repeat(256),
            "a\nb".to_owned(),
            "a\u{7f}".to_owned(),
        ] {
            assert_eq!(UserId::parse(&bad), Err(ProfileError::UserId), "{bad:?}");
        }
    }

    #[test]
    fn an_empty_profile_field_is_no_value() {
        assert_eq!(ProfileText::parse(""), Ok(None));
        assert_eq!(Email::parse(""), Ok(None));
    }

    #[test]
    fn a_profile_field_of_up_to_500_characters_is_kept() {
        let name = ProfileText::parse(&"é".repeat(500)).unwrap().unwrap();
        assert_eq!(name.as_str().chars().count(), 500);
    }

    #[test]
    fn a_profile_field_over_500_characters_or_with_a_line_break_is_refused() {
        assert_eq!(
            ProfileText::parse(&"é".repeat(501)),
            Err(ProfileError::Field)
        );
        assert_eq!(
            ProfileText::parse("Ada\nLovelace"),
            Err(ProfileError::Field)
        );
    }

    #[test]
    fn an_email_must_look_like_local_at_domain() {
        assert_eq!(
            Email::parse("ada@acme.test").map(|e| e.map(String::from)),
            Ok(Some("ada@acme.test".to_owned()))
        );
        for bad in [
            "nope",
            "@acme.test",
            "ada@acme",
            "ada@.acme",
            "a da@acme.test",
        ] {
            assert_eq!(Email::parse(bad), Err(ProfileError::Email), "{bad}");
        }
    }

    #[test]
    fn an_overlong_email_is_refused_for_its_length_before_its_shape() {
        assert_eq!(Email::parse(&"x".repeat(501)), Err(ProfileError::Field));
        assert_eq!(Email::parse("a\u{0}@b.c"), Err(ProfileError::Field));
    }

    #[test]
    fn profile_errors_read_as_the_end_of_a_sentence_about_the_field() {
        assert_eq!(
            format!("email {}", ProfileError::Field),
            "email must be at most 500 characters without control characters"
        );
        assert_eq!(
            format!("user_id {}", ProfileError::UserId),
            "user_id must be 1 to 255 characters without control characters"
        );
    }
}
