//! Redaction of personal data, applied on the log writer thread before a record is written
//! anywhere: nothing it removes reaches the write-ahead log or the table, and the request
//! path pays nothing for it.
//!
//! Rules come from `[[endpoints.redact]]`: a JSON path into the request and response bodies
//! (`$.a.b`, `[*]`, `[0]`, `['key']`), a built-in detector (`email`, `phone`, `credit_card`
//! with the Luhn check, `iban` with its mod-97 check, `ipv4`) or a `regex`, applied to the
//! bodies (and a stream's raw text) as text. Actions: `mask` (`"***"`), `hash` (HMAC-SHA256
//! with the configured key, `hmac:` + hex, so equal values still join), `drop` (the key is
//! removed; a text match is cut out).

use hmac::{Hmac, Mac};
use inferlog_core::config::{RedactAction, RedactRule, RedactTarget};
use inferlog_core::record::ENCODING_UTF8;
use inferlog_core::Record;
use regex::Regex;
use serde_json::Value;
use sha2::Sha256;

const MASK: &str = "***";
/// Logging error code: a body (or a stream's raw events) was not kept because the redaction
/// rules could not be applied to it.
pub const BODY_NOT_REDACTABLE: &str = "BODY_NOT_REDACTABLE";

enum Matcher {
    Path(Vec<Step>),
    Text { regex: Regex, check: fn(&str) -> bool },
}

#[derive(Debug, Clone, PartialEq)]
enum Step {
    Key(String),
    Index(usize),
    All,
}

struct Rule {
    matcher: Matcher,
    action: RedactAction,
}

pub struct Redactor {
    rules: Vec<Rule>,
    key: Option<Vec<u8>>,
    /// `capture.bodies = false`: bodies are not written at all.
    drop_bodies: bool,
}

impl Redactor {
    /// Compiles the rules; `key` is needed by `hash` rules.
    pub fn new(rules: &[RedactRule], key: Option<&str>) -> Result<Self, String> {
        Self::with_bodies(rules, key, true)
    }

    /// As [`Redactor::new`]; with `bodies` false, no body is written (metadata only).
    pub fn with_bodies(rules: &[RedactRule], key: Option<&str>, bodies: bool) -> Result<Self, String> {
        let mut compiled = Vec::new();
        for (i, rule) in rules.iter().enumerate() {
            let matcher = match &rule.target {
                RedactTarget::Path(path) => Matcher::Path(parse_path(path).map_err(|e| format!("redact[{i}].path: {e}"))?),
                RedactTarget::Detector(name) => detector(name).map_err(|e| format!("redact[{i}].detector: {e}"))?,
                RedactTarget::Regex(pattern) => Matcher::Text {
                    regex: Regex::new(pattern).map_err(|e| format!("redact[{i}].regex: {e}"))?,
                    check: |_| true,
                },
            };
            if rule.action == RedactAction::Hash && key.is_none() {
                return Err(format!("redact[{i}]: action `hash` needs `redaction_key`"));
            }
            compiled.push(Rule { matcher, action: rule.action });
        }
        Ok(Redactor { rules: compiled, key: key.map(|k| k.as_bytes().to_vec()), drop_bodies: !bodies })
    }

    pub fn is_empty(&self) -> bool {
        self.rules.is_empty() && !self.drop_bodies
    }

    /// Redacts the record's bodies (and the other fields text rules apply to) in place.
    /// What cannot be checked is not kept: a body that is not text, a body path rules cannot
    /// read (not JSON, or cut at the size limit), and with path rules a stream's raw events.
    pub fn apply(&self, record: &mut Record) {
        if self.drop_bodies {
            // Sizes, types, status, timings and token counts stay (read before the body goes).
            record.fill_llm_facts();
            for (body, encoding) in [
                (&mut record.request, &mut record.request_encoding),
                (&mut record.response, &mut record.response_encoding),
            ] {
                *body = None;
                *encoding = None;
            }
            record.response_stream = None;
        }
        if self.rules.is_empty() {
            return;
        }
        let mut dropped = false;
        // A stream's assembled response is JSON text whatever the raw stream's encoding.
        let response_is_text = record.stream_status.is_some() || record.response_encoding.as_deref() == Some(ENCODING_UTF8);
        for (body, encoding, is_text) in [
            (&mut record.request, &mut record.request_encoding, None),
            (&mut record.response, &mut record.response_encoding, Some(response_is_text)),
        ] {
            let Some(text) = body.take() else { continue };
            let is_text = is_text.unwrap_or(encoding.as_deref() == Some(ENCODING_UTF8));
            *body = if is_text { self.body(text) } else { None };
            if body.is_none() {
                *encoding = None;
                dropped = true;
            }
        }
        if let Some(stream) = record.response_stream.take() {
            if self.has_paths() || record.response_encoding.is_none() && record.stream_status.is_none() {
                dropped = true;
            } else {
                record.response_stream = Some(self.text(stream));
            }
        }
        if let Some(id) = record.client_request_id.take() {
            record.client_request_id = Some(self.text(id));
        }
        record.path = self.text(std::mem::take(&mut record.path));
        for value in record.request_metadata.values_mut() {
            *value = self.text(std::mem::take(value));
        }
        if dropped {
            record.logging_error_codes.push(BODY_NOT_REDACTABLE.to_string());
        }
    }

    fn has_paths(&self) -> bool {
        self.rules.iter().any(|r| matches!(r.matcher, Matcher::Path(_)))
    }

    /// A body: parsed and written again when it is JSON (so escapes such as `\u0040` cannot
    /// hide a match), path rules, then text rules. `None` when path rules apply but the body is
    /// not JSON: it is not kept.
    fn body(&self, body: String) -> Option<String> {
        match serde_json::from_str::<Value>(&body) {
            Ok(mut json) => {
                for rule in &self.rules {
                    if let Matcher::Path(steps) = &rule.matcher {
                        self.at_path(&mut json, steps, rule.action);
                    }
                }
                // Text rules see the decoded values, never the serialised text: a match there
                // could cut through an escape (`\u0010` followed by digits) and leave
                // invalid JSON.
                self.text_in_values(&mut json);
                Some(json.to_string())
            }
            Err(_) if self.has_paths() => None,
            Err(_) => Some(self.text(body)),
        }
    }

    /// Applies the text rules to every string, number and key of a JSON value. A number that
    /// matches (a card number sent as a number, say) becomes the redacted string.
    fn text_in_values(&self, value: &mut Value) {
        match value {
            Value::String(s) => *s = self.text(std::mem::take(s)),
            Value::Number(n) => {
                let digits = n.to_string();
                let redacted = self.text(digits.clone());
                if redacted != digits {
                    *value = Value::String(redacted);
                }
            }
            Value::Array(items) => items.iter_mut().for_each(|v| self.text_in_values(v)),
            Value::Object(map) => {
                let entries = std::mem::take(map);
                for (key, mut v) in entries {
                    self.text_in_values(&mut v);
                    map.insert(self.text(key), v);
                }
            }
            Value::Null | Value::Bool(_) => {}
        }
    }

    fn text(&self, mut text: String) -> String {
        for rule in &self.rules {
            if let Matcher::Text { regex, check } = &rule.matcher {
                if regex.is_match(&text) {
                    text = regex
                        .replace_all(&text, |c: &regex::Captures| {
                            let found = &c[0];
                            if !check(found) {
                                return found.to_string();
                            }
                            match rule.action {
                                RedactAction::Mask => MASK.to_string(),
                                RedactAction::Hash => self.hash(found),
                                RedactAction::Drop => String::new(),
                            }
                        })
                        .into_owned();
                }
            }
        }
        text
    }

    fn at_path(&self, value: &mut Value, steps: &[Step], action: RedactAction) {
        let Some((step, rest)) = steps.split_first() else { return };
        let last = rest.is_empty();
        match (step, value) {
            (Step::Key(key), Value::Object(map)) => {
                if last {
                    match action {
                        RedactAction::Drop => {
                            map.remove(key);
                        }
                        _ => {
                            if let Some(v) = map.get_mut(key) {
                                *v = self.replacement(v, action);
                            }
                        }
                    }
                } else if let Some(v) = map.get_mut(key) {
                    self.at_path(v, rest, action);
                }
            }
            (Step::Index(i), Value::Array(items)) => {
                if last {
                    if let Some(v) = items.get_mut(*i) {
                        *v = if action == RedactAction::Drop { Value::Null } else { self.replacement(v, action) };
                    }
                } else if let Some(v) = items.get_mut(*i) {
                    self.at_path(v, rest, action);
                }
            }
            (Step::All, Value::Array(items)) => {
                for v in items.iter_mut() {
                    if last {
                        *v = if action == RedactAction::Drop { Value::Null } else { self.replacement(v, action) };
                    } else {
                        self.at_path(v, rest, action);
                    }
                }
            }
            (Step::All, Value::Object(map)) => {
                for v in map.values_mut() {
                    if last {
                        *v = if action == RedactAction::Drop { Value::Null } else { self.replacement(v, action) };
                    } else {
                        self.at_path(v, rest, action);
                    }
                }
            }
            _ => {}
        }
    }

    fn replacement(&self, value: &Value, action: RedactAction) -> Value {
        match action {
            RedactAction::Mask | RedactAction::Drop => Value::String(MASK.into()),
            RedactAction::Hash => {
                let text = match value {
                    Value::String(s) => s.clone(),
                    other => other.to_string(),
                };
                Value::String(self.hash(&text))
            }
        }
    }

    fn hash(&self, value: &str) -> String {
        let key = self.key.as_deref().unwrap_or_default();
        let mut mac = Hmac::<Sha256>::new_from_slice(key).expect("HMAC takes keys of any length");
        mac.update(value.as_bytes());
        let digest = mac.finalize().into_bytes();
        format!("hmac:{}", digest.iter().map(|b| format!("{b:02x}")).collect::<String>())
    }
}

/// `$.a.b[*].c`, `$['a b'][0]`, `$.*`.
fn parse_path(path: &str) -> Result<Vec<Step>, String> {
    let rest = path.trim().strip_prefix('$').ok_or_else(|| format!("`{path}` must start with `$`"))?;
    let mut steps = Vec::new();
    let mut chars = rest.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '.' => {
                let mut key = String::new();
                while let Some(&n) = chars.peek() {
                    if n == '.' || n == '[' {
                        break;
                    }
                    key.push(n);
                    chars.next();
                }
                match key.as_str() {
                    "" => return Err(format!("`{path}`: empty key")),
                    "*" => steps.push(Step::All),
                    _ => steps.push(Step::Key(key)),
                }
            }
            '[' => {
                let mut inner = String::new();
                for n in chars.by_ref() {
                    if n == ']' {
                        break;
                    }
                    inner.push(n);
                }
                let inner = inner.trim();
                if inner == "*" {
                    steps.push(Step::All);
                } else if let Ok(i) = inner.parse::<usize>() {
                    steps.push(Step::Index(i));
                } else if let Some(key) = inner.strip_prefix('\'').and_then(|k| k.strip_suffix('\'')) {
                    steps.push(Step::Key(key.to_string()));
                } else {
                    return Err(format!("`{path}`: `[{inner}]` is not [*], [n] or ['key']"));
                }
            }
            other => return Err(format!("`{path}`: unexpected `{other}`")),
        }
    }
    if steps.is_empty() {
        return Err(format!("`{path}` names nothing"));
    }
    Ok(steps)
}

fn detector(name: &str) -> Result<Matcher, String> {
    let (pattern, check): (&str, fn(&str) -> bool) = match name {
        "email" => (r"[A-Za-z0-9._%+-]+@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*\.[A-Za-z]{2,}", |_| true),
        "phone" => (r"\+?\(?\d{1,4}\)?[\s.-]?\(?\d{2,4}\)?(?:[\s.-]?\d{2,4}){2,4}", |m| m.chars().filter(char::is_ascii_digit).count() >= 8),
        "credit_card" => (r"\b(?:\d[ -]?){12,18}\d\b", luhn),
        "iban" => (r"\b[A-Z]{2}\d{2}(?: ?[A-Z0-9]){11,30}\b", iban),
        "ipv4" => (r"\b(?:(?:25[0-5]|2[0-4]\d|1?\d?\d)\.){3}(?:25[0-5]|2[0-4]\d|1?\d?\d)\b", |_| true),
        other => return Err(format!("`{other}` is not a detector (email, phone, credit_card, iban, ipv4)")),
    };
    Ok(Matcher::Text { regex: Regex::new(pattern).expect("built-in patterns compile"), check })
}

/// The Luhn check digit test of a card number.
fn luhn(candidate: &str) -> bool {
    let digits: Vec<u32> = candidate.chars().filter_map(|c| c.to_digit(10)).collect();
    if !(13..=19).contains(&digits.len()) {
        return false;
    }
    let sum: u32 = digits
        .iter()
        .rev()
        .enumerate()
        .map(|(i, &d)| if i % 2 == 1 { let x = d * 2; if x > 9 { x - 9 } else { x } } else { d })
        .sum();
    sum % 10 == 0
}

/// ISO 13616: move the first four characters to the end, letters to numbers, mod 97 == 1.
fn iban(candidate: &str) -> bool {
    let compact: String = candidate.chars().filter(|c| !c.is_whitespace()).collect();
    if !(15..=34).contains(&compact.len()) {
        return false;
    }
    let rearranged = compact[4..].chars().chain(compact[..4].chars());
    let mut remainder: u64 = 0;
    for c in rearranged {
        let value = match c.to_digit(36) {
            Some(v) => v as u64,
            None => return false,
        };
        remainder = if value >= 10 { (remainder * 100 + value) % 97 } else { (remainder * 10 + value) % 97 };
    }
    remainder == 1
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rule(target: RedactTarget, action: RedactAction) -> RedactRule {
        RedactRule { target, action }
    }

    fn record(request: &str, response: &str) -> Record {
        Record {
            request: Some(request.into()),
            response: Some(response.into()),
            request_encoding: Some(ENCODING_UTF8.into()),
            response_encoding: Some(ENCODING_UTF8.into()),
            ..Default::default()
        }
    }

    #[test]
    fn paths_detectors_and_actions() {
        let r = Redactor::new(
            &[
                rule(RedactTarget::Path("$.dataframe_records[*].email".into()), RedactAction::Mask),
                rule(RedactTarget::Path("$.dataframe_records[*].ssn".into()), RedactAction::Drop),
                rule(RedactTarget::Detector("credit_card".into()), RedactAction::Hash),
                rule(RedactTarget::Detector("ipv4".into()), RedactAction::Drop),
            ],
            Some("k"),
        )
        .unwrap();
        let mut rec = record(
            r#"{"dataframe_records": [{"email": "a@b.example", "ssn": "123-45-6789", "note": "card 4111 1111 1111 1111 from 10.1.2.3"}]}"#,
            "pay with 4111111111111111; order 1234567890123 stays",
        );
        r.apply(&mut rec);
        let request: Value = serde_json::from_str(rec.request.as_deref().unwrap()).unwrap();
        let row = &request["dataframe_records"][0];
        assert_eq!(row["email"], "***");
        assert!(row.get("ssn").is_none());
        let note = row["note"].as_str().unwrap();
        assert!(note.starts_with("card hmac:") && note.ends_with(" from "), "{note}");
        // The response is not JSON, and path rules exist: it is not kept.
        assert!(rec.response.is_none() && rec.logging_error_codes == [BODY_NOT_REDACTABLE], "{rec:?}");
        // Equal values hash equally, so joins still work.
        assert_eq!(r.hash("x"), r.hash("x"));
        assert_ne!(r.hash("x"), Redactor::new(&[], Some("other")).unwrap().hash("x"));
    }

    #[test]
    fn text_rules_reach_every_text_field_and_escapes_do_not_hide_matches() {
        let r = Redactor::new(&[rule(RedactTarget::Detector("email".into()), RedactAction::Mask)], None).unwrap();
        let mut rec = record(r#"{"who": "jane\u0040example.org"}"#, "plain jane@example.org");
        rec.path = "/users/jane@example.org".into();
        rec.request_metadata.insert("x-user".into(), "jane@example.org".into());
        rec.response_stream = Some("data: jane@example.org".into());
        r.apply(&mut rec);
        let all = format!("{rec:?}");
        assert!(!all.contains("jane@example.org") && !all.contains("jane\\u0040"), "{all}");
        assert_eq!(rec.request.as_deref(), Some(r#"{"who":"***"}"#));

        // Matches are sought in decoded values: an escape next to digits is not cut into
        // invalid JSON; numbers and keys are values too.
        let r = Redactor::new(
            &[rule(RedactTarget::Detector("phone".into()), RedactAction::Mask), rule(RedactTarget::Detector("credit_card".into()), RedactAction::Mask), rule(RedactTarget::Detector("email".into()), RedactAction::Mask)],
            None,
        )
        .unwrap();
        let mut rec = record(r#"{"a": "x\u00100040y", "card": 4111111111111111, "jane@example.org": 1}"#, "");
        r.apply(&mut rec);
        let request: Value = serde_json::from_str(rec.request.as_deref().unwrap()).expect("still JSON");
        assert_eq!(request["a"], "x\u{10}0040y");
        assert_eq!(request["card"], "***");
        assert_eq!(request["***"], 1, "{request}");
        // Bytes that are not text cannot be checked: not kept.
        let mut binary = record("x", "y");
        binary.request_encoding = Some("base64".into());
        r.apply(&mut binary);
        assert!(binary.request.is_none() && binary.request_encoding.is_none());
        assert_eq!(binary.logging_error_codes, [BODY_NOT_REDACTABLE]);
    }

    #[test]
    fn detectors_find_what_they_name() {
        let r = |d: &str| Redactor::new(&[rule(RedactTarget::Detector(d.into()), RedactAction::Mask)], None).unwrap();
        assert_eq!(r("email").text("mail jane.doe@mail.example.org now".into()), "mail *** now");
        assert_eq!(r("phone").text("call +49 30 1234 5678 today".into()), "call *** today");
        assert_eq!(r("iban").text("IBAN DE89 3704 0044 0532 0130 00 ok".into()), "IBAN *** ok");
        assert_eq!(r("iban").text("DE00 3704 0044 0532 0130 00".into()), "DE00 3704 0044 0532 0130 00", "bad checksum");
        assert_eq!(r("ipv4").text("from 192.168.0.1:80".into()), "from ***:80");
        assert!(Redactor::new(&[rule(RedactTarget::Detector("ssn".into()), RedactAction::Mask)], None).is_err());
        assert!(Redactor::new(&[rule(RedactTarget::Regex("(".into()), RedactAction::Mask)], None).is_err());
        assert!(Redactor::new(&[rule(RedactTarget::Path("a.b".into()), RedactAction::Mask)], None).is_err());
        assert!(Redactor::new(&[rule(RedactTarget::Regex("x".into()), RedactAction::Hash)], None).err().unwrap().contains("redaction_key"));
    }

    mod properties {
        use super::*;
        use proptest::prelude::*;

        static CORPUS: std::sync::LazyLock<Vec<(String, Vec<u8>)>> =
            std::sync::LazyLock::new(|| inferlog_core::fuzz_corpus::load("redact"));

        fn masking() -> Redactor {
            let rules: Vec<RedactRule> = ["email", "phone", "credit_card", "iban", "ipv4"]
                .into_iter()
                .map(|d| rule(RedactTarget::Detector(d.into()), RedactAction::Mask))
                .chain([rule(RedactTarget::Path("$.a[*].b.c[*]".into()), RedactAction::Drop)])
                .collect();
            Redactor::new(&rules, None).unwrap()
        }

        proptest! {
            #![proptest_config(ProptestConfig { cases: inferlog_core::fuzz_corpus::cases(2000), ..ProptestConfig::default() })]

            /// Whatever the body, redaction does not panic, and what it leaves has nothing left
            /// to redact: a second pass changes nothing.
            #[test]
            fn redaction_leaves_nothing_to_redact(
                seed in 0..CORPUS.len(),
                edits in proptest::collection::vec((any::<usize>(), "[ -~]{0,3}|\\\\u0040|@|\\.|[0-9]{1,4}"), 0..5),
            ) {
                let mut body = String::from_utf8_lossy(&CORPUS[seed].1).into_owned();
                for (at, text) in edits {
                    let mut at = at % (body.len() + 1);
                    while !body.is_char_boundary(at) {
                        at -= 1;
                    }
                    body.insert_str(at, &text);
                }
                let redactor = masking();
                let mut once = record(&body, &body);
                redactor.apply(&mut once);
                let mut twice = once.clone();
                redactor.apply(&mut twice);
                prop_assert_eq!(&twice.request, &once.request);
                prop_assert_eq!(&twice.response, &once.response);
            }
        }
    }
}
