//! The widget's public config: what a visitor's browser may see about a client key
//! (agent, branding, copy, locale), made of types that can only hold valid values.
//!
//! Validation happens while deserializing (`try_from = "String"`), so a config that
//! exists is a config that passed the rules of API.md: colours `#RRGGBB`, URLs `https`,
//! strings at most 500 characters, unknown fields rejected.

use serde::{Deserialize, Serialize};

/// Longest string API.md allows in a config.
pub const MAX_TEXT_CHARS: usize = 500;

/// Why a config value was refused; the message names the rule, the caller adds the path.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    #[error("must be a colour like #1A2B3C")]
    Colour,
    #[error("must be an https URL")]
    Url,
    #[error("must be at most 500 characters")]
    TooLong,
    #[error("must not contain control characters")]
    ControlCharacters,
    #[error("must be a language tag like en or pt-BR")]
    Locale,
    #[error("must not be empty")]
    Empty,
}

/// A colour written `#RRGGBB`, stored in upper case so equal colours compare equal.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct HexColor(String);

impl HexColor {
    pub fn parse(input: &str) -> Result<Self, ConfigError> {
        let bytes = input.as_bytes();
        if bytes.len() == 7 && bytes[0] == b'#' && bytes[1..].iter().all(u8::is_ascii_hexdigit) {
            Ok(Self(input.to_ascii_uppercase()))
        } else {
            Err(ConfigError::Colour)
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl TryFrom<String> for HexColor {
    type Error = ConfigError;
    fn try_from(value: String) -> Result<Self, Self::Error> {
        Self::parse(&value)
    }
}

impl From<HexColor> for String {
    fn from(value: HexColor) -> Self {
        value.0
    }
}

/// An absolute `https` URL (avatars are loaded by the visitor's browser; plain http
/// would be mixed content on every customer site and a tracking vector).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct HttpsUrl(String);

impl HttpsUrl {
    pub fn parse(input: &str) -> Result<Self, ConfigError> {
        if input.chars().count() > MAX_TEXT_CHARS {
            return Err(ConfigError::TooLong);
        }
        let url = url::Url::parse(input).map_err(|_| ConfigError::Url)?;
        let has_host = url.host_str().is_some_and(|host| !host.is_empty());
        if url.scheme() != "https"
            || !has_host
            || !url.username().is_empty()
            || url.password().is_some()
        {
            return Err(ConfigError::Url);
        }
        Ok(Self(url.to_string()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl TryFrom<String> for HttpsUrl {
    type Error = ConfigError;
    fn try_from(value: String) -> Result<Self, Self::Error> {
        Self::parse(&value)
    }
}

impl From<HttpsUrl> for String {
    fn from(value: HttpsUrl) -> Self {
        value.0
    }
}

/// Human text shown in the widget: at most 500 characters, no control characters other
/// than line breaks (they would corrupt the widget's layout or logs).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Text(String);

impl Text {
    pub fn parse(input: &str) -> Result<Self, ConfigError> {
        if input.chars().count() > MAX_TEXT_CHARS {
            return Err(ConfigError::TooLong);
        }
        if input.chars().any(|c| c.is_control() && c != '\n') {
            return Err(ConfigError::ControlCharacters);
        }
        Ok(Self(input.to_owned()))
    }

    /// Like [`Text::parse`] but also refuses the empty string (names, ids).
    pub fn parse_non_empty(input: &str) -> Result<Self, ConfigError> {
        if input.trim().is_empty() {
            return Err(ConfigError::Empty);
        }
        Self::parse(input)
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl TryFrom<String> for Text {
    type Error = ConfigError;
    fn try_from(value: String) -> Result<Self, Self::Error> {
        Self::parse(&value)
    }
}

impl From<Text> for String {
    fn from(value: Text) -> Self {
        value.0
    }
}

impl std::fmt::Display for Text {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// A BCP 47 style language tag (`en`, `pt-BR`, `zh-Hant-TW`), checked for shape only.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Locale(String);

impl Locale {
    pub fn parse(input: &str) -> Result<Self, ConfigError> {
        let mut parts = input.split('-');
        let language_ok = parts.next().is_some_and(|p| {
            (2..=3).contains(&p.len()) && p.bytes().all(|b| b.is_ascii_alphabetic())
        });
        let rest_ok = parts
            .all(|p| (1..=8).contains(&p.len()) && p.bytes().all(|b| b.is_ascii_alphanumeric()));
        if language_ok && rest_ok && input.len() <= 35 {
            Ok(Self(input.to_owned()))
        } else {
            Err(ConfigError::Locale)
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl Default for Locale {
    fn default() -> Self {
        Self("en".to_owned())
    }
}

impl TryFrom<String> for Locale {
    type Error = ConfigError;
    fn try_from(value: String) -> Result<Self, Self::Error> {
        Self::parse(&value)
    }
}

impl From<Locale> for String {
    fn from(value: Locale) -> Self {
        value.0
    }
}

/// Where the launcher bubble sits on the customer's page.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "kebab-case")]
pub enum LauncherPosition {
    #[default]
    BottomRight,
    BottomLeft,
}

/// The widget's public config. Every field has a neutral default so a key created
/// without a config still renders a usable widget.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields, default)]
pub struct WidgetConfig {
    pub agent: Agent,
    pub branding: Branding,
    pub copy: Copy,
    pub locale: Locale,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields, default)]
pub struct Agent {
    /// `None` shows the client key's name, so a fresh key needs no config at all.
    pub display_name: Option<Text>,
    pub avatar_url: Option<HttpsUrl>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields, default)]
pub struct Branding {
    pub primary_color: HexColor,
    pub background_color: HexColor,
    pub text_color: HexColor,
    pub launcher_position: LauncherPosition,
}

impl Default for Branding {
    fn default() -> Self {
        Self {
            primary_color: HexColor("#2563EB".to_owned()),
            background_color: HexColor("#FFFFFF".to_owned()),
            text_color: HexColor("#111827".to_owned()),
            launcher_position: LauncherPosition::BottomRight,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields, default)]
pub struct Copy {
    pub title: Text,
    pub greeting: Text,
    pub input_placeholder: Text,
    pub offline_message: Text,
}

impl Default for Copy {
    fn default() -> Self {
        Self {
            title: Text("Chat with us".to_owned()),
            greeting: Text("Hi! How can we help?".to_owned()),
            input_placeholder: Text("Type a message…".to_owned()),
            offline_message: Text(
                "We are offline right now. Leave a message and we will get back to you.".to_owned(),
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(json: &str) -> Result<WidgetConfig, String> {
        serde_json::from_str(json).map_err(|e| e.to_string())
    }

    #[test]
    fn an_empty_config_takes_the_neutral_defaults() {
        assert_eq!(parse("{}"), Ok(WidgetConfig::default()));
    }

    #[test]
    fn colours_are_normalised_to_upper_case() {
        assert_eq!(
            HexColor::parse("#a1b2c3").map(|c| c.as_str().to_owned()),
            Ok("#A1B2C3".to_owned())
        );
    }

    #[test]
    fn colours_that_are_not_rrggbb_are_refused() {
        for bad in ["red", "#fff", "#GGGGGG", "1A2B3C", "#1A2B3C4", ""] {
            assert_eq!(HexColor::parse(bad), Err(ConfigError::Colour), "{bad}");
        }
    }

    #[test]
    fn only_https_urls_with_a_host_are_accepted() {
        assert!(HttpsUrl::parse("https://cdn.example.com/a.png").is_ok());
        for bad in [
            "http://cdn.example.com/a.png",
            "javascript:alert(1)",
            "https://user:pw@x.test/",
            "/a.png",
            "data:image/png;base64,AA",
        ] {
            assert_eq!(HttpsUrl::parse(bad), Err(ConfigError::Url), "{bad}");
        }
    }

    #[test]
    fn text_over_five_hundred_characters_is_refused() {
        assert!(Text::parse(&"é".repeat(500)).is_ok());
        assert_eq!(Text::parse(&"é".repeat(501)), Err(ConfigError::TooLong));
    }

    #[test]
    fn text_with_control_characters_is_refused() {
        assert_eq!(Text::parse("a\u{0}b"), Err(ConfigError::ControlCharacters));
        assert!(Text::parse("line one\nline two").is_ok());
    }

    #[test]
    fn locales_are_checked_for_shape() {
        for good in ["en", "pt-BR", "zh-Hant-TW", "fil"] {
            assert!(Locale::parse(good).is_ok(), "{good}");
        }
        for bad in ["", "e", "english", "en_US", "en-", "12"] {
            assert_eq!(Locale::parse(bad), Err(ConfigError::Locale), "{bad}");
        }
    }

    #[test]
    fn unknown_fields_are_refused_and_named() {
        let err = parse(r##"{"branding": {"primary_colour": "#000000"}}"##).unwrap_err();
        assert!(err.contains("unknown field `primary_colour`"), "{err}");
    }

    #[test]
    fn a_bad_value_deep_in_the_config_is_refused_with_the_rule() {
        let err = parse(r##"{"branding": {"primary_color": "blue"}}"##).unwrap_err();
        assert!(err.contains("must be a colour like #1A2B3C"), "{err}");
    }

    #[test]
    fn a_full_config_round_trips() {
        let json = r##"{"agent":{"display_name":"Ada","avatar_url":"https://cdn.example.com/ada.png"},
            "branding":{"primary_color":"#112233","background_color":"#FFFFFF","text_color":"#000000","launcher_position":"bottom-left"},
            "copy":{"title":"Hi","greeting":"Hello","input_placeholder":"Say","offline_message":"Later"},"locale":"pt-BR"}"##;
        let config = parse(json).unwrap();
        assert_eq!(
            config.branding.launcher_position,
            LauncherPosition::BottomLeft
        );
        let again: WidgetConfig =
            serde_json::from_value(serde_json::to_value(&config).unwrap()).unwrap();
        assert_eq!(again, config);
    }
}
