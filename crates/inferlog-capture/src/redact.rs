//! Redaction of personal data, applied on the log writer thread before a record is written
//! anywhere: nothing it removes reaches the write-ahead log or the table, and the request
//! path pays nothing for it.
//!
//! Rules come from `[[endpoints.redact]]`: a JSON path into the request and response bodies
//! (`$.a.b`, `[*]`, `[0]`, `['key']`), a built-in detector (`email`, `phone`, `credit_card`
//! with the Luhn check, `iban` with its mod-97 check, `ipv4`) or a `regex`, applied as text
//! to the bodies (and a stream's raw text) and to every other text field of the record (path,
//! content types, metadata, client request id, requester, error, model). Actions: `mask`
//! (`"***"`), `hash` (HMAC-SHA256 with the configured key, `hmac:` + hex, so equal values
//! still join), `drop` (the key is removed; a text match is cut out).
//!
//! Text rules look through encodings: they search the text with its percent-escapes
//! (`%40`) and JSON escapes (`\u0040`) decoded, repeatedly (`%2540`), and replace the
//! original characters the match came from. A body cut at `max_payload_bytes` may end inside
//! a match; a detector's partial match at the very end (`jane@exa`) is replaced too.

use hmac::{Hmac, Mac};
use inferlog_core::config::{RedactAction, RedactRule, RedactTarget};
use inferlog_core::record::{AuditEvent, BodyEncoding, MAX_REQUEST_SIZE_EXCEEDED, MAX_RESPONSE_SIZE_EXCEEDED};
use inferlog_core::Record;
use regex::bytes::Regex;
use serde_json::Value;
use sha2::Sha256;
use std::borrow::Cow;
use std::ops::Range;

const MASK: &str = "***";
/// Logging error code: a body (or a stream's raw events) was not kept because the redaction
/// rules could not be applied to it.
pub const BODY_NOT_REDACTABLE: &str = "BODY_NOT_REDACTABLE";

/// Decoding rounds at most: `%252540` takes three.
const DECODE_ROUNDS: usize = 4;
/// How far from the end of a cut body a partial match is sought (an address is at most 320
/// characters; escapes may make it up to six times longer).
const TAIL_WINDOW_BYTES: usize = 2048;

enum Matcher {
    Path(Vec<Step>),
    Text {
        regex: Regex,
        check: fn(&str) -> bool,
        /// What a match cut at the end of a truncated body may look like, anchored at the end.
        cut_tail: Option<Regex>,
    },
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
                    cut_tail: None,
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

    /// Redacts the record in place: its bodies, and the text rules over every other text field.
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
        let was_cut = |code: &str| record.logging_error_codes.iter().any(|c| c == code);
        let (request_cut, response_cut) = (was_cut(MAX_REQUEST_SIZE_EXCEEDED), was_cut(MAX_RESPONSE_SIZE_EXCEEDED));
        let mut dropped = false;
        // A stream's assembled response is JSON text whatever the raw stream's encoding.
        let response_is_text = record.stream_status.is_some() || record.response_encoding == Some(BodyEncoding::Utf8);
        for (body, encoding, is_text, cut) in [
            (&mut record.request, &mut record.request_encoding, None, request_cut),
            (&mut record.response, &mut record.response_encoding, Some(response_is_text), response_cut),
        ] {
            let Some(text) = body.take() else { continue };
            let is_text = is_text.unwrap_or(*encoding == Some(BodyEncoding::Utf8));
            *body = if is_text { self.body(text, cut) } else { None };
            if body.is_none() {
                *encoding = None;
                dropped = true;
            }
        }
        if let Some(stream) = record.response_stream.take() {
            if self.has_paths() || record.response_encoding.is_none() && record.stream_status.is_none() {
                dropped = true;
            } else {
                record.response_stream = Some(self.cut_text(stream, response_cut));
            }
        }
        // Every other field a caller or an upstream can put text in.
        // (The request ids, the endpoint, model and target names are the gateway's own.)
        self.text_in_place(&mut record.method);
        self.text_in_place(&mut record.path);
        for field in [
            &mut record.client_request_id,
            &mut record.request_content_type,
            &mut record.response_content_type,
            &mut record.error,
            &mut record.requester,
            &mut record.llm_model,
        ] {
            if let Some(text) = field.as_mut() {
                self.text_in_place(text);
            }
        }
        record.request_metadata = std::mem::take(&mut record.request_metadata)
            .into_iter()
            .map(|(name, value)| (self.text(name), self.text(value)))
            .collect();
        if dropped {
            record.logging_error_codes.push(BODY_NOT_REDACTABLE.to_string());
        }
    }

    /// Applies the text rules to the fields of an `_audit` event that carry names and text
    /// callers chose (the token's name, what was asked, the error).
    pub fn apply_to_audit(&self, event: &mut AuditEvent) {
        for field in [&mut event.who, &mut event.detail, &mut event.result] {
            self.text_in_place(field);
        }
        if let Some(endpoint) = event.endpoint.as_mut() {
            self.text_in_place(endpoint);
        }
    }

    fn text_in_place(&self, text: &mut String) {
        *text = self.text(std::mem::take(text));
    }

    fn has_paths(&self) -> bool {
        self.rules.iter().any(|r| matches!(r.matcher, Matcher::Path(_)))
    }

    /// A body: parsed and written again when it is JSON (so escapes such as `\u0040` cannot
    /// hide a match), path rules, then text rules. `None` when path rules apply but the body is
    /// not JSON: it is not kept.
    fn body(&self, body: String, cut: bool) -> Option<String> {
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
                if cut {
                    // A cut stream's assembled answer is JSON whose strings end where the cut
                    // fell: any of them may end inside a match.
                    self.cut_tail_in_strings(&mut json);
                }
                Some(json.to_string())
            }
            Err(_) if self.has_paths() => None,
            // Not JSON (or JSON the parser gives up on: too deep, cut, NaN, trailing bytes):
            // the text rules see it with its escapes decoded.
            Err(_) => Some(self.cut_text(body, cut)),
        }
    }

    /// The text rules; for a body cut at the size limit, also the partial matches at its end.
    fn cut_text(&self, text: String, cut: bool) -> String {
        let text = self.text(text);
        if cut { self.mask_cut_tail(text) } else { text }
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

    fn cut_tail_in_strings(&self, value: &mut Value) {
        match value {
            Value::String(s) => *s = self.mask_cut_tail(std::mem::take(s)),
            Value::Array(items) => items.iter_mut().for_each(|v| self.cut_tail_in_strings(v)),
            Value::Object(map) => map.values_mut().for_each(|v| self.cut_tail_in_strings(v)),
            _ => {}
        }
    }

    /// Applies the text rules, each to the text as decoded by [`Decoded`].
    fn text(&self, mut text: String) -> String {
        for rule in &self.rules {
            if let Matcher::Text { regex, check, .. } = &rule.matcher {
                let redacted = {
                    let decoded = Decoded::of(&text);
                    if !regex.is_match(&decoded.bytes) {
                        continue;
                    }
                    let matches = regex.find_iter(&decoded.bytes).filter_map(|m| {
                        let found = String::from_utf8_lossy(m.as_bytes());
                        (!m.is_empty() && check(&found)).then(|| (decoded.original(&text, m.range()), self.replacement_text(&found, rule.action)))
                    });
                    splice(&text, matches)
                };
                text = redacted;
            }
        }
        text
    }

    /// Replaces what may be the start of a detector's match at the end of a cut body.
    fn mask_cut_tail(&self, mut text: String) -> String {
        for rule in &self.rules {
            if let Matcher::Text { cut_tail: Some(tail), .. } = &rule.matcher {
                let redacted = {
                    let decoded = Decoded::of(&text);
                    let from = decoded.bytes.len().saturating_sub(TAIL_WINDOW_BYTES);
                    let Some(m) = tail.find(&decoded.bytes[from..]).filter(|m| !m.is_empty()) else { continue };
                    let range = from + m.start()..from + m.end();
                    let found = String::from_utf8_lossy(&decoded.bytes[range.clone()]).into_owned();
                    splice(&text, std::iter::once((decoded.original(&text, range), self.replacement_text(&found, rule.action))))
                };
                text = redacted;
            }
        }
        text
    }

    fn replacement_text(&self, found: &str, action: RedactAction) -> String {
        match action {
            RedactAction::Mask => MASK.to_string(),
            RedactAction::Hash => self.hash(found),
            RedactAction::Drop => String::new(),
        }
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

/// Where the gateway saves the `_audit` table's rules (under `{data_dir}/state/`), so the
/// commands run on the machine (`inferlog token create`, ...) redact their events alike.
pub const AUDIT_RULES_FILE: &str = "audit_redaction.json";

/// A text rule as saved in [`AUDIT_RULES_FILE`].
#[derive(serde::Serialize, serde::Deserialize)]
struct SavedRule {
    detector: Option<String>,
    regex: Option<String>,
    action: String,
}

/// The rules of the `_audit` table: the text rules of every endpoint, each once. An event may
/// concern any endpoint or none, and carries names callers chose (a token's name, what was
/// asked); path rules name places in an endpoint's bodies, not in events.
pub fn audit_rules<'a>(rule_sets: impl IntoIterator<Item = &'a [RedactRule]>) -> Vec<RedactRule> {
    let mut rules: Vec<RedactRule> = Vec::new();
    for rule in rule_sets.into_iter().flatten() {
        if !matches!(rule.target, RedactTarget::Path(_)) && !rules.contains(rule) {
            rules.push(rule.clone());
        }
    }
    rules
}

/// Saves the `_audit` table's rules for the commands run on the machine.
pub fn save_audit_rules(data_dir: &std::path::Path, rules: &[RedactRule]) -> std::io::Result<()> {
    let saved: Vec<SavedRule> = rules
        .iter()
        .filter_map(|rule| {
            let (detector, regex) = match &rule.target {
                RedactTarget::Detector(d) => (Some(d.clone()), None),
                RedactTarget::Regex(r) => (None, Some(r.clone())),
                RedactTarget::Path(_) => return None,
            };
            let action = match rule.action {
                RedactAction::Mask => "mask",
                RedactAction::Hash => "hash",
                RedactAction::Drop => "drop",
            };
            Some(SavedRule { detector, regex, action: action.into() })
        })
        .collect();
    let dir = data_dir.join("state");
    std::fs::create_dir_all(&dir)?;
    let temporary = dir.join(format!("{AUDIT_RULES_FILE}.tmp"));
    std::fs::write(&temporary, serde_json::to_vec_pretty(&saved).expect("rules serialize"))?;
    std::fs::rename(temporary, dir.join(AUDIT_RULES_FILE))
}

/// The `_audit` redactor of a command run on the machine: the rules the gateway last saved
/// (none if it never ran). Without `key`, `hash` rules mask instead: a value that cannot be
/// hashed is not kept.
pub fn load_audit_redactor(data_dir: &std::path::Path, key: Option<&str>) -> Result<Redactor, String> {
    let path = data_dir.join("state").join(AUDIT_RULES_FILE);
    let text = match std::fs::read(&path) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Redactor::new(&[], key),
        Err(e) => return Err(format!("cannot read {}: {e}", path.display())),
    };
    let saved: Vec<SavedRule> = serde_json::from_slice(&text).map_err(|e| format!("{} is not a rules file: {e}", path.display()))?;
    let mut rules = Vec::new();
    for rule in saved {
        let target = match (rule.detector, rule.regex) {
            (Some(d), None) => RedactTarget::Detector(d),
            (None, Some(r)) => RedactTarget::Regex(r),
            _ => return Err(format!("{}: a rule names one detector or regex", path.display())),
        };
        let action = match (rule.action.as_str(), key) {
            ("hash", Some(_)) => RedactAction::Hash,
            ("drop", _) => RedactAction::Drop,
            _ => RedactAction::Mask,
        };
        rules.push(RedactRule { target, action });
    }
    Redactor::new(&rules, key).map_err(|e| format!("{}: {e}", path.display()))
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

/// Characters of an address's local part and of its domain: letters of any script, so
/// `jörg@exämple.de` is an address too.
const EMAIL_LOCAL: &str = r"[\p{L}\p{M}\p{N}._%+-]+";
const EMAIL_LABEL: &str = r"[\p{L}\p{M}\p{N}-]+";

fn detector(name: &str) -> Result<Matcher, String> {
    let email = format!(r#"(?:{EMAIL_LOCAL}|"[^"\r\n]{{1,64}}")@{EMAIL_LABEL}(?:\.{EMAIL_LABEL})*\.\p{{L}}{{2,}}"#);
    // The start of an address up to its `@` and any of its domain, or up to an escape cut
    // short (`%2`, `%254`, `\u00`: what is left of an escape undecoded).
    let email_cut = format!(r#"(?:{EMAIL_LOCAL}|"[^"\r\n]{{1,64}}")(?:@[\p{{L}}\p{{M}}\p{{N}}.-]*|[%\\][%\\u0-9A-Fa-f]{{0,12}})\z"#);
    let (pattern, check, cut_tail): (&str, fn(&str) -> bool, &str) = match name {
        "email" => (&email, |_| true, &email_cut),
        "phone" => (
            r"\+?\(?\d{1,4}\)?[\s.-]?\(?\d{2,4}\)?(?:[\s.-]?\d{2,4}){2,4}",
            |m| m.chars().filter(char::is_ascii_digit).count() >= 8,
            r"\+?\(?\d[\d\s().-]*\z",
        ),
        "credit_card" => (r"\b(?:\d[ -]?){12,18}\d\b", luhn, r"\d(?:[ -]?\d)*[ -]?\z"),
        "iban" => (r"\b[A-Z]{2}\d{2}(?: ?[A-Z0-9]){11,30}\b", iban, r"\b[A-Z]{2}\d(?:\d(?: ?[A-Z0-9])*)? ?\z"),
        "ipv4" => (
            r"\b(?:(?:25[0-5]|2[0-4]\d|1?\d?\d)\.){3}(?:25[0-5]|2[0-4]\d|1?\d?\d)\b",
            |_| true,
            r"\b\d{1,3}(?:\.\d{0,3}){0,3}\z",
        ),
        other => return Err(format!("`{other}` is not a detector (email, phone, credit_card, iban, ipv4)")),
    };
    let compile = |p: &str| Regex::new(p).expect("built-in patterns compile");
    Ok(Matcher::Text { regex: compile(pattern), check, cut_tail: Some(compile(cut_tail)) })
}

/// A text with its percent-escapes (`%40`) and JSON escapes (`\u0040`, `\"`) decoded,
/// repeatedly, as bytes (an escape may stand for bytes that are not UTF-8), with the range of
/// the original text each decoded byte came from.
struct Decoded<'a> {
    bytes: Cow<'a, [u8]>,
    /// Empty when nothing was decoded: byte i is byte i of the text.
    origins: Origins,
}

/// For each decoded byte, the range of the input it came from.
type Origins = Vec<(usize, usize)>;

impl<'a> Decoded<'a> {
    fn of(text: &'a str) -> Self {
        let mut decoded = Decoded { bytes: Cow::Borrowed(text.as_bytes()), origins: Vec::new() };
        for _ in 0..DECODE_ROUNDS {
            let Some((bytes, origins)) = decode_escapes(&decoded.bytes) else { break };
            // A byte of this round came from a range of the previous round's bytes.
            let origins = if decoded.origins.is_empty() {
                origins
            } else {
                origins.into_iter().map(|(start, end)| (decoded.origins[start].0, decoded.origins[end - 1].1)).collect()
            };
            decoded = Decoded { bytes: Cow::Owned(bytes), origins };
        }
        decoded
    }

    /// The range of `text` a (non-empty) range of decoded bytes came from, widened to whole
    /// characters.
    fn original(&self, text: &str, range: Range<usize>) -> Range<usize> {
        let (mut start, mut end) = match self.origins.is_empty() {
            true => (range.start, range.end),
            false => (self.origins[range.start].0, self.origins[range.end - 1].1),
        };
        while !text.is_char_boundary(start) {
            start -= 1;
        }
        while !text.is_char_boundary(end) {
            end += 1;
        }
        start..end
    }
}

/// One round of decoding `%HH`, `\uHHHH` (with surrogate pairs) and JSON's `\"`-style
/// escapes; `None` when there is nothing to decode.
fn decode_escapes(input: &[u8]) -> Option<(Vec<u8>, Origins)> {
    if !input.iter().any(|&b| b == b'%' || b == b'\\') {
        return None;
    }
    let hex = |at: usize, digits: usize| -> Option<u32> {
        let s = input.get(at..at + digits)?;
        s.iter().all(u8::is_ascii_hexdigit).then(|| u32::from_str_radix(std::str::from_utf8(s).ok()?, 16).ok())?
    };
    let mut bytes = Vec::with_capacity(input.len());
    let mut origins = Vec::with_capacity(input.len());
    let mut decoded_any = false;
    let mut i = 0;
    while i < input.len() {
        let mut utf8 = [0u8; 4];
        let (out, len): (&[u8], usize) = match (input[i], input.get(i + 1)) {
            (b'%', _) if hex(i + 1, 2).is_some() => {
                utf8[0] = hex(i + 1, 2).unwrap_or_default() as u8;
                (&utf8[..1], 3)
            }
            (b'\\', Some(b'u')) if hex(i + 2, 4).is_some() => {
                let unit = hex(i + 2, 4).unwrap_or_default();
                let low = (input.get(i + 6..i + 8) == Some(b"\\u".as_slice())).then(|| hex(i + 8, 4)).flatten();
                let (c, len) = match (unit, low) {
                    (0xD800..=0xDBFF, Some(low @ 0xDC00..=0xDFFF)) => (char::from_u32(0x10000 + ((unit - 0xD800) << 10) + (low - 0xDC00)), 12),
                    _ => (char::from_u32(unit), 6),
                };
                (c.unwrap_or(char::REPLACEMENT_CHARACTER).encode_utf8(&mut utf8).as_bytes(), len)
            }
            (b'\\', Some(&e @ (b'"' | b'\\' | b'/' | b'b' | b'f' | b'n' | b'r' | b't'))) => {
                utf8[0] = match e {
                    b'b' => 0x08,
                    b'f' => 0x0c,
                    b'n' => b'\n',
                    b'r' => b'\r',
                    b't' => b'\t',
                    other => other,
                };
                (&utf8[..1], 2)
            }
            _ => (&input[i..=i], 1),
        };
        decoded_any |= len > 1;
        for &b in out {
            bytes.push(b);
            origins.push((i, i + len));
        }
        i += len;
    }
    decoded_any.then_some((bytes, origins))
}

/// `text` with each range replaced; ranges come in order, and one that overlaps the previous
/// (two matches in one escape) is covered by it.
fn splice(text: &str, replacements: impl Iterator<Item = (Range<usize>, String)>) -> String {
    let mut out = String::with_capacity(text.len());
    let mut at = 0;
    for (range, replacement) in replacements {
        if range.start < at {
            at = at.max(range.end);
            continue;
        }
        out.push_str(&text[at..range.start]);
        out.push_str(&replacement);
        at = range.end;
    }
    out.push_str(&text[at..]);
    out
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
            request_encoding: Some(BodyEncoding::Utf8),
            response_encoding: Some(BodyEncoding::Utf8),
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
        binary.request_encoding = Some(BodyEncoding::Base64);
        r.apply(&mut binary);
        assert!(binary.request.is_none() && binary.request_encoding.is_none());
        assert_eq!(binary.logging_error_codes, [BODY_NOT_REDACTABLE]);
    }

    fn email_masking() -> Redactor {
        Redactor::new(&[rule(RedactTarget::Detector("email".into()), RedactAction::Mask)], None).unwrap()
    }

    #[test]
    fn every_text_field_of_a_record_goes_through_the_rules() {
        let r = email_masking();
        let mut rec = record("{}", "{}");
        rec.method = "x@example.com".into();
        rec.request_content_type = Some("application/json; owner=x@example.com".into());
        rec.response_content_type = Some("text/plain; owner=x@example.com".into());
        rec.requester = Some("victim.person@example.com".into());
        rec.error = Some("upstream said: no such user x@example.com".into());
        rec.llm_model = Some("ft:x@example.com".into());
        rec.client_request_id = Some("x@example.com".into());
        rec.request_metadata.insert("x-user-x@example.com".into(), "x@example.com".into());
        r.apply(&mut rec);
        let all = format!("{rec:?}");
        assert!(!all.contains('@'), "{all}");
        assert_eq!(rec.request_content_type.as_deref(), Some("application/json; owner=***"));

        let mut event = AuditEvent::now("victim.person@example.com", "token.create", Some("m"), r#"{"name": "x\u0040example.com"}"#.into(), Err("x@example.com exists".into()));
        r.apply_to_audit(&mut event);
        assert_eq!((event.who.as_str(), event.detail.as_str(), event.result.as_str()), ("***", r#"{"name": "***"}"#, "*** exists"));
    }

    #[test]
    fn encodings_do_not_hide_matches() {
        let r = email_masking();
        let masked = |body: &str| {
            let mut rec = record(body, "");
            r.apply(&mut rec);
            rec.request.unwrap()
        };
        // Percent-encoded, also twice, in form bodies and paths.
        assert_eq!(masked("to=victim.person%40example.com&x=1"), "to=***&x=1");
        assert_eq!(masked("to=victim.person%2540example.com"), "to=***");
        let mut rec = record("", "");
        rec.path = "/users/victim.person%40example.com/orders".into();
        r.apply(&mut rec);
        assert_eq!(rec.path, "/users/***/orders");
        // JSON the parser gives up on is searched with its escapes decoded.
        let deep = format!("{}\"jane\\u0040example.org\"{}", "[".repeat(200), "]".repeat(200));
        for body in [deep.as_str(), r#"{"a": NaN, "b": "jane\u0040example.org"}"#, r#"{"b": "jane\u0040example.org"} trailing"#, r#"{"b": "jane\u0040example.org", "c": "#] {
            let out = masked(body);
            assert!(!out.contains("jane") && out.contains("***"), "{out}");
        }
        // A JSON string holding escaped JSON, and percent-encoding inside a JSON string.
        assert_eq!(masked(r#"{"inner": "{\"to\": \"jane\\u0040example.org\"}", "url": "/u?to=jane%40example.org"}"#), r#"{"inner":"{\"to\": \"***\"}","url":"/u?to=***"}"#);
        // Letters of any script, and quoted local parts.
        assert_eq!(masked("write to jörg.person@exämple.de today"), "write to *** today");
        assert_eq!(masked(r#"write to "victim.person"@example.com today"#), "write to *** today");
        // Equal addresses hash equally however they were encoded.
        let h = Redactor::new(&[rule(RedactTarget::Detector("email".into()), RedactAction::Hash)], Some("k")).unwrap();
        assert_eq!(h.text("jane%40example.org".into()), h.text("jane@example.org".into()));
    }

    #[test]
    fn a_match_cut_at_the_size_limit_is_redacted_too() {
        let r = Redactor::new(
            &[rule(RedactTarget::Detector("email".into()), RedactAction::Mask), rule(RedactTarget::Detector("credit_card".into()), RedactAction::Mask)],
            None,
        )
        .unwrap();
        for (cut, kept) in [
            ("note: write to victim.person@exa", "note: write to ***"),
            ("note: write to victim.person@", "note: write to ***"),
            ("note: write to victim.person%4", "note: write to ***"),
            ("note: write to victim.person%25", "note: write to ***"),
            ("{\"to\": \"victim.person\\u00", "{\"to\": \"***"),
            ("card 4111 1111 11", "card ***"),
        ] {
            let mut rec = record(cut, cut);
            rec.response_stream = Some(cut.into());
            rec.stream_status = Some(inferlog_core::record::StreamStatus::Completed);
            rec.logging_error_codes = vec![MAX_REQUEST_SIZE_EXCEEDED.into(), MAX_RESPONSE_SIZE_EXCEEDED.into()];
            r.apply(&mut rec);
            assert_eq!(rec.request.as_deref(), Some(kept));
            assert_eq!(rec.response.as_deref(), Some(kept));
            assert_eq!(rec.response_stream.as_deref(), Some(kept));
        }
        // A cut stream's assembled answer is JSON: its strings end where the cut fell.
        let assembled = r#"{"choices":[{"message":{"content":"write to victim.person@exa"}}],"model":"m"}"#;
        let mut rec = record("{}", assembled);
        rec.stream_status = Some(inferlog_core::record::StreamStatus::Completed);
        rec.logging_error_codes = vec![MAX_RESPONSE_SIZE_EXCEEDED.into()];
        r.apply(&mut rec);
        assert_eq!(rec.response.as_deref(), Some(r#"{"choices":[{"message":{"content":"write to ***"}}],"model":"m"}"#));
        // A body that was not cut ends where its text ends: nothing more is masked.
        let mut whole = record("write to victim.person@exa", "");
        r.apply(&mut whole);
        assert_eq!(whole.request.as_deref(), Some("write to victim.person@exa"));
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
                edits in proptest::collection::vec((any::<usize>(), "[ -~]{0,3}|\\\\u0040|%40|%2540|@|\\.|[0-9]{1,4}|ö"), 0..5),
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

            /// An address put anywhere in any body, in any of the encodings a caller may use, is
            /// not in what is kept, whether the body is JSON or not and wherever it was cut.
            #[test]
            fn an_address_in_any_encoding_is_never_kept(
                seed in 0..CORPUS.len(),
                at in any::<usize>(),
                encoding in 0..5usize,
                cut_after in proptest::option::of(0..40usize),
            ) {
                let address = ["victim.person@example.com", "victim.person%40example.com", "victim.person\\u0040example.com",
                    "victim.person%2540example.com", "\"victim.person\"@example.com"][encoding];
                let mut body = String::from_utf8_lossy(&CORPUS[seed].1).into_owned();
                let mut at = at % (body.len() + 1);
                while !body.is_char_boundary(at) {
                    at -= 1;
                }
                body.insert_str(at, address);
                let mut rec = record(&body, &body);
                if let Some(n) = cut_after {
                    // Cut as max_payload_bytes does, past the first character of the `@` (or
                    // of its escape): before it, nothing says the text is an address yet.
                    let marker = address.find(['@', '%', '\\']).expect("every form has one");
                    let mut end = (at + marker + 1 + n).min(body.len());
                    while !body.is_char_boundary(end) {
                        end -= 1;
                    }
                    rec = record(&body[..end], &body[..end]);
                    rec.logging_error_codes = vec![MAX_REQUEST_SIZE_EXCEEDED.into(), MAX_RESPONSE_SIZE_EXCEEDED.into()];
                }
                email_masking().apply(&mut rec);
                for kept in [&rec.request, &rec.response] {
                    let kept = kept.as_deref().unwrap_or_default();
                    prop_assert!(!kept.contains("victim.person"), "{:?} -> {}", body, kept);
                }
            }
        }
    }
}
