//! LLM exchanges: a server-sent event stream (OpenAI chat completions, completions, responses,
//! or any SSE) assembled, as it passes, into the response the non-streaming API would have
//! returned; and the token usage and model named by a response.
//!
//! The assembler sees each chunk once and keeps only what the assembled response needs
//! (message text, tool calls, finish reasons, usage), bounded by a byte limit, so a long
//! stream costs no more memory than its answer.

use serde_json::{json, Map, Value};
use std::collections::BTreeMap;

/// How much longer than the assembly limit one SSE line may be before it is dropped.
const MAX_LINE_OVERHEAD: usize = 1 << 20;

/// Token counts as the upstream reported them; `None` where it reported nothing.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Usage {
    pub prompt_tokens: Option<i64>,
    pub completion_tokens: Option<i64>,
    pub total_tokens: Option<i64>,
}

impl Usage {
    /// `usage` of an OpenAI-style response: `prompt_tokens`/`completion_tokens` (chat and
    /// completions) or `input_tokens`/`output_tokens` (responses), and `total_tokens`.
    pub fn of(usage: &Value) -> Usage {
        let count = |keys: &[&str]| keys.iter().find_map(|k| usage.get(*k).and_then(Value::as_i64));
        Usage {
            prompt_tokens: count(&["prompt_tokens", "input_tokens"]),
            completion_tokens: count(&["completion_tokens", "output_tokens"]),
            total_tokens: count(&["total_tokens"]),
        }
    }

    pub fn is_empty(&self) -> bool {
        *self == Usage::default()
    }
}

/// Token usage and model name of a (non-streamed) JSON response. Bodies that mention neither
/// are not parsed.
pub fn response_facts(body: &str) -> (Usage, Option<String>) {
    if !body.contains("\"usage\"") && !body.contains("\"model\"") {
        return (Usage::default(), None);
    }
    let Ok(Value::Object(response)) = serde_json::from_str::<Value>(body) else {
        return (Usage::default(), None);
    };
    let usage = response.get("usage").map(Usage::of).unwrap_or_default();
    let model = response.get("model").and_then(Value::as_str).map(str::to_string);
    (usage, model)
}

/// Whether a content type is a server-sent event stream.
pub fn is_event_stream(content_type: Option<&str>) -> bool {
    content_type.is_some_and(|ct| ct.trim_start().to_ascii_lowercase().starts_with("text/event-stream"))
}

/// What a finished (or cut short) stream amounts to.
#[derive(Debug, Clone, PartialEq)]
pub struct Assembled {
    /// JSON text of the assembled response; `None` for a stream without any event.
    pub response: Option<String>,
    /// Events with data, not counting the `[DONE]` sentinel.
    pub chunks: i64,
    pub usage: Usage,
    pub model: Option<String>,
    /// The assembled text reached the byte limit and was cut.
    pub cut: bool,
}

#[derive(Default)]
struct ToolCall {
    id: Option<String>,
    kind: Option<String>,
    name: String,
    arguments: String,
}

#[derive(Default)]
struct Choice {
    role: Option<String>,
    content: Option<String>,
    reasoning: Option<String>,
    refusal: Option<String>,
    tool_calls: BTreeMap<i64, ToolCall>,
    finish_reason: Option<Value>,
}

/// The shape the stream turned out to have (decided by its first JSON event).
#[derive(Default, PartialEq)]
enum Kind {
    #[default]
    Unknown,
    Chat,
    Completion,
    Responses,
    Other,
}

/// Incremental SSE parser and assembler. Feed it the body's bytes in order.
pub struct StreamAssembler {
    limit: usize,
    /// Bytes of an unfinished line.
    line: Vec<u8>,
    /// `data` of the event being read.
    data: Option<String>,
    chunks: i64,
    output_seen: bool,
    kind: Kind,
    /// id, created, model, system_fingerprint: from the first chunk that has them.
    head: Map<String, Value>,
    choices: BTreeMap<i64, Choice>,
    /// Responses API: the last `response` object an event carried.
    response: Option<Value>,
    output_text: String,
    /// Any other stream: each event's data.
    events: Vec<Value>,
    usage: Usage,
    model: Option<String>,
    assembled_bytes: usize,
    cut: bool,
    last_was_cr: bool,
}

impl StreamAssembler {
    /// `limit` bounds the assembled text (content, arguments, event data), like
    /// `max_payload_bytes` bounds a captured body.
    pub fn new(limit: usize) -> Self {
        StreamAssembler {
            limit,
            line: Vec::new(),
            data: None,
            chunks: 0,
            output_seen: false,
            kind: Kind::Unknown,
            head: Map::new(),
            choices: BTreeMap::new(),
            response: None,
            output_text: String::new(),
            events: Vec::new(),
            usage: Usage::default(),
            model: None,
            assembled_bytes: 0,
            cut: false,
            last_was_cr: false,
        }
    }

    /// Whether an event carrying generated output (text, a tool call, reasoning) has arrived.
    pub fn output_seen(&self) -> bool {
        self.output_seen
    }

    pub fn feed(&mut self, bytes: &[u8]) {
        for &b in bytes {
            match b {
                b'\n' if self.last_was_cr => self.last_was_cr = false,
                b'\n' | b'\r' => {
                    self.last_was_cr = b == b'\r';
                    let line = std::mem::take(&mut self.line);
                    self.line_done(&line);
                }
                _ => {
                    self.last_was_cr = false;
                    // One event's line may be longer than what is kept of it (its JSON has
                    // more than the text), but not without bound.
                    if self.line.len() < self.limit.saturating_add(MAX_LINE_OVERHEAD) {
                        self.line.push(b);
                    } else {
                        self.cut = true;
                    }
                }
            }
        }
    }

    fn line_done(&mut self, line: &[u8]) {
        if line.is_empty() {
            if let Some(data) = self.data.take() {
                self.event(&data);
            }
            return;
        }
        let text = String::from_utf8_lossy(line);
        let (field, value) = match text.split_once(':') {
            Some((field, value)) => (field, value.strip_prefix(' ').unwrap_or(value)),
            None => (text.as_ref(), ""),
        };
        if field == "data" {
            match &mut self.data {
                // An event of many data lines is bounded like one long line.
                Some(data) if data.len() + value.len() >= self.limit.saturating_add(MAX_LINE_OVERHEAD) => self.cut = true,
                Some(data) => {
                    data.push('\n');
                    data.push_str(value);
                }
                None => self.data = Some(value.to_string()),
            }
        }
        // `event`, `id`, `retry` and comments (`:`) carry nothing the record needs: the event
        // type of the responses API is repeated in its data's `type`.
    }

    fn event(&mut self, data: &str) {
        if data.trim() == "[DONE]" {
            return;
        }
        self.chunks += 1;
        let parsed: Option<Value> = serde_json::from_str(data).ok();
        if self.kind == Kind::Unknown {
            self.kind = kind_of(parsed.as_ref());
            if self.kind == Kind::Unknown {
                // A preamble such as Azure's prompt-filter chunk (`"choices": []`, no object
                // type): it tells nothing yet and carries no output.
                return;
            }
        }
        match (&self.kind, parsed) {
            (Kind::Chat | Kind::Completion, Some(Value::Object(chunk))) => self.choice_chunk(chunk),
            (Kind::Responses, Some(Value::Object(event))) => self.responses_event(event),
            (Kind::Other, parsed) => {
                let value = parsed.unwrap_or_else(|| Value::String(data.to_string()));
                if self.room(data.len()) {
                    self.events.push(value);
                }
                self.output_seen = true;
            }
            // Keep-alives and other events that are not part of the API's stream.
            _ => {}
        }
    }

    /// Whether `n` more assembled bytes fit; past the limit the stream is marked cut, and
    /// nothing more is taken, so what was assembled is a prefix of the answer.
    fn room(&mut self, n: usize) -> bool {
        if self.cut || self.assembled_bytes + n > self.limit {
            self.cut = true;
            return false;
        }
        self.assembled_bytes += n;
        true
    }

    fn choice_chunk(&mut self, chunk: Map<String, Value>) {
        for key in ["id", "created", "model", "system_fingerprint"] {
            if let Some(v) = chunk.get(key).filter(|v| !v.is_null() && v.as_str() != Some("")) {
                self.head.entry(key).or_insert_with(|| v.clone());
            }
        }
        if let Some(model) = chunk.get("model").and_then(Value::as_str).filter(|m| !m.is_empty()) {
            self.model.get_or_insert_with(|| model.to_string());
        }
        if let Some(usage) = chunk.get("usage").filter(|u| u.is_object()) {
            self.usage = Usage::of(usage);
        }
        let Some(choices) = chunk.get("choices").and_then(Value::as_array) else { return };
        for choice in choices {
            let index = choice.get("index").and_then(Value::as_i64).unwrap_or(0);
            let text = |v: Option<&Value>| v.and_then(Value::as_str).unwrap_or_default().to_string();
            let delta = choice.get("delta").unwrap_or(&Value::Null);
            let content = if self.kind == Kind::Chat { text(delta.get("content")) } else { text(choice.get("text")) };
            let reasoning = text(delta.get("reasoning_content").or_else(|| delta.get("reasoning")));
            let refusal = text(delta.get("refusal"));
            let tool_calls = delta.get("tool_calls").and_then(Value::as_array).cloned().unwrap_or_default();
            if !content.is_empty() || !reasoning.is_empty() || !refusal.is_empty() || !tool_calls.is_empty() {
                self.output_seen = true;
            }
            let total = content.len() + reasoning.len() + refusal.len();
            let fits = self.room(total);
            let entry = self.choices.entry(index).or_default();
            if let Some(role) = delta.get("role").and_then(Value::as_str) {
                entry.role = Some(role.to_string());
            }
            if fits {
                for (slot, text) in [(&mut entry.content, content), (&mut entry.reasoning, reasoning), (&mut entry.refusal, refusal)] {
                    if !text.is_empty() {
                        slot.get_or_insert_with(String::new).push_str(&text);
                    }
                }
            }
            for call in &tool_calls {
                let at = call.get("index").and_then(Value::as_i64).unwrap_or(0);
                let name = text(call.pointer("/function/name"));
                let arguments = text(call.pointer("/function/arguments"));
                let fits = self.room(name.len() + arguments.len());
                let entry = self.choices.entry(index).or_default().tool_calls.entry(at).or_default();
                if let Some(id) = call.get("id").and_then(Value::as_str) {
                    entry.id = Some(id.to_string());
                }
                if let Some(kind) = call.get("type").and_then(Value::as_str) {
                    entry.kind = Some(kind.to_string());
                }
                if fits {
                    entry.name.push_str(&name);
                    entry.arguments.push_str(&arguments);
                }
            }
            if let Some(reason) = choice.get("finish_reason").filter(|r| !r.is_null()) {
                self.choices.entry(index).or_default().finish_reason = Some(reason.clone());
            }
        }
    }

    fn responses_event(&mut self, event: Map<String, Value>) {
        let kind = event.get("type").and_then(Value::as_str).unwrap_or_default();
        if let Some(response) = event.get("response").filter(|r| r.is_object()) {
            if let Some(usage) = response.get("usage").filter(|u| u.is_object()) {
                self.usage = Usage::of(usage);
            }
            if let Some(model) = response.get("model").and_then(Value::as_str) {
                self.model = Some(model.to_string());
            }
            self.response = Some(response.clone());
        }
        if kind.ends_with(".delta") {
            self.output_seen = true;
            if kind == "response.output_text.delta" {
                let delta = event.get("delta").and_then(Value::as_str).unwrap_or_default();
                if self.room(delta.len()) {
                    self.output_text.push_str(delta);
                }
            }
        }
    }

    /// The assembled response, in the shape of the non-streaming API's answer.
    pub fn finish(mut self) -> Assembled {
        // A stream that ends without a blank line still delivers its last event.
        let line = std::mem::take(&mut self.line);
        if !line.is_empty() {
            self.line_done(&line);
        }
        if let Some(data) = self.data.take() {
            self.event(&data);
        }
        let response = match self.kind {
            Kind::Unknown => None,
            Kind::Chat | Kind::Completion => Some(self.choice_response()),
            Kind::Responses => Some(self.responses_response()),
            Kind::Other => Some(Value::Array(std::mem::take(&mut self.events))),
        };
        Assembled {
            response: response.map(|r| r.to_string()),
            chunks: self.chunks,
            usage: self.usage,
            model: self.model,
            cut: self.cut,
        }
    }

    fn choice_response(&mut self) -> Value {
        let chat = self.kind == Kind::Chat;
        let mut out = Map::new();
        if let Some(id) = self.head.remove("id") {
            out.insert("id".into(), id);
        }
        out.insert("object".into(), json!(if chat { "chat.completion" } else { "text_completion" }));
        for key in ["created", "model", "system_fingerprint"] {
            if let Some(v) = self.head.remove(key) {
                out.insert(key.into(), v);
            }
        }
        let choices: Vec<Value> = std::mem::take(&mut self.choices)
            .into_iter()
            .map(|(index, c)| {
                let finish_reason = c.finish_reason.unwrap_or(Value::Null);
                if !chat {
                    return json!({"index": index, "text": c.content.unwrap_or_default(), "logprobs": null, "finish_reason": finish_reason});
                }
                let mut message = Map::new();
                message.insert("role".into(), json!(c.role.unwrap_or_else(|| "assistant".into())));
                message.insert("content".into(), json!(c.content));
                if let Some(refusal) = c.refusal {
                    message.insert("refusal".into(), json!(refusal));
                }
                if let Some(reasoning) = c.reasoning {
                    message.insert("reasoning_content".into(), json!(reasoning));
                }
                if !c.tool_calls.is_empty() {
                    let calls: Vec<Value> = c
                        .tool_calls
                        .into_values()
                        .map(|t| {
                            json!({"id": t.id, "type": t.kind.unwrap_or_else(|| "function".into()),
                                   "function": {"name": t.name, "arguments": t.arguments}})
                        })
                        .collect();
                    message.insert("tool_calls".into(), Value::Array(calls));
                }
                json!({"index": index, "message": message, "logprobs": null, "finish_reason": finish_reason})
            })
            .collect();
        out.insert("choices".into(), Value::Array(choices));
        let u = self.usage;
        let usage = if u.is_empty() {
            Value::Null
        } else {
            json!({"prompt_tokens": u.prompt_tokens, "completion_tokens": u.completion_tokens, "total_tokens": u.total_tokens})
        };
        out.insert("usage".into(), usage);
        Value::Object(out)
    }

    fn responses_response(&mut self) -> Value {
        let mut response = self.response.take().unwrap_or_else(|| json!({"object": "response"}));
        let completed = response.get("status").and_then(Value::as_str) == Some("completed");
        // A stream cut short never sent `response.completed`: keep the text it did send.
        if !completed {
            if let Value::Object(r) = &mut response {
                r.insert("output_text".into(), json!(self.output_text));
            }
        }
        response
    }
}

/// The stream's shape from one event; `Unknown` when the event cannot tell.
fn kind_of(event: Option<&Value>) -> Kind {
    let Some(Value::Object(e)) = event else { return Kind::Other };
    match e.get("object").and_then(Value::as_str) {
        Some("chat.completion.chunk") => return Kind::Chat,
        Some("text_completion") => return Kind::Completion,
        _ => {}
    }
    if e.get("type").and_then(Value::as_str).is_some_and(|t| t.starts_with("response.")) {
        return Kind::Responses;
    }
    match e.get("choices").and_then(Value::as_array) {
        Some(choices) if choices.is_empty() => Kind::Unknown,
        Some(choices) if choices[0].get("delta").is_some() => Kind::Chat,
        Some(choices) if choices[0].get("text").is_some() => Kind::Completion,
        _ => Kind::Other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn assemble(stream: &str, limit: usize, split: usize) -> (Assembled, bool) {
        let mut a = StreamAssembler::new(limit);
        // Fed in small pieces, as frames arrive.
        for piece in stream.as_bytes().chunks(split) {
            a.feed(piece);
        }
        let seen = a.output_seen();
        (a.finish(), seen)
    }

    fn chat_chunk(delta: Value, finish: Option<&str>) -> String {
        let chunk = json!({"id": "chatcmpl-1", "object": "chat.completion.chunk", "created": 1700000000, "model": "m-1",
            "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]});
        format!("data: {chunk}\n\n")
    }

    #[test]
    fn chat_stream_becomes_a_chat_completion() {
        let mut s = chat_chunk(json!({"role": "assistant", "content": ""}), None);
        s += &chat_chunk(json!({"content": "Hel"}), None);
        s += &chat_chunk(json!({"content": "lo é"}), None);
        s += &chat_chunk(json!({}), Some("stop"));
        s += "data: {\"id\":\"chatcmpl-1\",\"object\":\"chat.completion.chunk\",\"choices\":[],\"usage\":{\"prompt_tokens\":5,\"completion_tokens\":3,\"total_tokens\":8}}\n\n";
        s += "data: [DONE]\n\n";
        for split in [1, 3, 7, 1000] {
            let (a, seen) = assemble(&s, 1 << 20, split);
            assert!(seen);
            assert_eq!(a.chunks, 5);
            assert_eq!(a.usage, Usage { prompt_tokens: Some(5), completion_tokens: Some(3), total_tokens: Some(8) });
            assert_eq!(a.model.as_deref(), Some("m-1"));
            let r: Value = serde_json::from_str(a.response.as_deref().unwrap()).unwrap();
            assert_eq!(r["object"], "chat.completion");
            assert_eq!(r["id"], "chatcmpl-1");
            assert_eq!(r["choices"][0]["message"], json!({"role": "assistant", "content": "Hello é"}));
            assert_eq!(r["choices"][0]["finish_reason"], "stop");
            assert_eq!(r["usage"]["total_tokens"], 8);
        }
    }

    #[test]
    fn tool_calls_are_joined_by_index() {
        let mut s = chat_chunk(json!({"role": "assistant", "tool_calls": [{"index": 0, "id": "call_1", "type": "function", "function": {"name": "get_weather", "arguments": ""}}]}), None);
        s += &chat_chunk(json!({"tool_calls": [{"index": 0, "function": {"arguments": "{\"city\":"}}]}), None);
        s += &chat_chunk(json!({"tool_calls": [{"index": 0, "function": {"arguments": "\"Paris\"}"}}]}), None);
        s += &chat_chunk(json!({}), Some("tool_calls"));
        let (a, seen) = assemble(&s, 1 << 20, 5);
        assert!(seen);
        let r: Value = serde_json::from_str(a.response.as_deref().unwrap()).unwrap();
        assert_eq!(r["choices"][0]["message"]["content"], Value::Null);
        assert_eq!(
            r["choices"][0]["message"]["tool_calls"],
            json!([{"id": "call_1", "type": "function", "function": {"name": "get_weather", "arguments": "{\"city\":\"Paris\"}"}}])
        );
        assert_eq!(r["choices"][0]["finish_reason"], "tool_calls");
        assert_eq!(r["usage"], Value::Null, "no usage was streamed: none is made up");
        assert!(a.usage.is_empty());
    }

    #[test]
    fn a_preamble_and_keep_alives_do_not_decide_the_stream_or_count_as_output() {
        // Azure OpenAI opens with a prompt-filter chunk: no object type, no choices, empty ids.
        let mut s = "data: {\"choices\":[],\"object\":\"\",\"id\":\"\",\"model\":\"\",\"prompt_filter_results\":[]}\n\n".to_string();
        s += ": keep-alive\n\n";
        let mut a = StreamAssembler::new(1 << 20);
        a.feed(s.as_bytes());
        assert!(!a.output_seen(), "nothing generated yet");
        a.feed(chat_chunk(json!({"role": "assistant"}), None).as_bytes());
        // Once the stream is known to be a chat completion, other events are not output.
        a.feed(b"data: ping\n\n");
        assert!(!a.output_seen());
        a.feed(chat_chunk(json!({"content": "Hi"}), Some("stop")).as_bytes());
        assert!(a.output_seen());
        let a = a.finish();
        let r: Value = serde_json::from_str(a.response.as_deref().unwrap()).unwrap();
        assert_eq!((r["object"].as_str(), r["id"].as_str(), r["model"].as_str()), (Some("chat.completion"), Some("chatcmpl-1"), Some("m-1")));
        assert_eq!(r["choices"][0]["message"]["content"], "Hi");
        assert_eq!(a.chunks, 4);
    }

    #[test]
    fn role_only_chunk_is_not_output_and_crlf_lines_work() {
        let s = chat_chunk(json!({"role": "assistant", "content": ""}), None).replace("\n", "\r\n");
        let (a, seen) = assemble(&s, 1 << 20, 2);
        assert!(!seen);
        assert_eq!(a.chunks, 1);
    }

    #[test]
    fn completions_and_responses_streams() {
        let c = |text: &str, finish: Value| format!("data: {}\n\n", json!({"id": "cmpl-1", "object": "text_completion", "model": "m", "choices": [{"index": 0, "text": text, "finish_reason": finish}]}));
        let s = c("Once", Value::Null) + &c(" upon", json!("length")) + "data: [DONE]\n\n";
        let (a, _) = assemble(&s, 1 << 20, 4);
        let r: Value = serde_json::from_str(a.response.as_deref().unwrap()).unwrap();
        assert_eq!((r["object"].as_str(), r["choices"][0]["text"].as_str()), (Some("text_completion"), Some("Once upon")));
        assert_eq!(r["choices"][0]["finish_reason"], "length");

        let e = |v: Value| format!("event: {}\ndata: {v}\n\n", v["type"].as_str().unwrap());
        let done = json!({"id": "resp_1", "object": "response", "status": "completed", "model": "m-2", "output_text": "Hi!",
            "usage": {"input_tokens": 4, "output_tokens": 2, "total_tokens": 6}});
        let s = e(json!({"type": "response.created", "response": {"id": "resp_1", "object": "response", "status": "in_progress", "model": "m-2"}}))
            + &e(json!({"type": "response.output_text.delta", "delta": "Hi"}))
            + &e(json!({"type": "response.output_text.delta", "delta": "!"}))
            + &e(json!({"type": "response.completed", "response": done}));
        let (a, seen) = assemble(&s, 1 << 20, 9);
        assert!(seen);
        assert_eq!(a.response.as_deref().map(|r| serde_json::from_str::<Value>(r).unwrap()), Some(done));
        assert_eq!(a.usage, Usage { prompt_tokens: Some(4), completion_tokens: Some(2), total_tokens: Some(6) });
        // Cut short before `response.completed`: the text sent so far.
        let cut = s.split("event: response.completed").next().unwrap();
        let (a, _) = assemble(cut, 1 << 20, 9);
        let r: Value = serde_json::from_str(a.response.as_deref().unwrap()).unwrap();
        assert_eq!((r["status"].as_str(), r["output_text"].as_str()), (Some("in_progress"), Some("Hi!")));
    }

    #[test]
    fn other_streams_keep_each_events_data_and_limits_hold() {
        let s = "data: {\"a\": 1}\n\ndata: plain\ndata: two lines\n\n: comment\n\ndata: last-without-blank-line";
        let (a, seen) = assemble(s, 1 << 20, 3);
        assert!(seen);
        assert_eq!(a.chunks, 3);
        assert_eq!(a.response.as_deref(), Some(r#"[{"a":1},"plain\ntwo lines","last-without-blank-line"]"#));

        let mut long = chat_chunk(json!({"content": "x".repeat(100)}), None).repeat(9);
        long += &chat_chunk(json!({"content": "y"}), None);
        let (a, _) = assemble(&long, 250, 64);
        assert!(a.cut);
        let r: Value = serde_json::from_str(a.response.as_deref().unwrap()).unwrap();
        assert_eq!(r["choices"][0]["message"]["content"].as_str().unwrap(), "x".repeat(200), "a prefix: nothing after the cut");
        assert_eq!(a.chunks, 10, "chunks are counted past the limit");

        let (a, seen) = assemble("", 100, 1);
        assert_eq!((a.response, a.chunks, seen), (None, 0, false));
    }

    #[test]
    fn usage_and_model_of_plain_responses() {
        let (u, m) = response_facts(r#"{"id":"x","model":"gpt-x","usage":{"prompt_tokens":9,"completion_tokens":1,"total_tokens":10}}"#);
        assert_eq!((u.prompt_tokens, u.completion_tokens, u.total_tokens, m.as_deref()), (Some(9), Some(1), Some(10), Some("gpt-x")));
        let (u, m) = response_facts(r#"{"predictions": [1, 2]}"#);
        assert!(u.is_empty() && m.is_none());
        let (u, _) = response_facts(r#"{"model":"m","usage":{"input_tokens":3,"output_tokens":4}}"#);
        assert_eq!((u.prompt_tokens, u.completion_tokens, u.total_tokens), (Some(3), Some(4), None), "a missing total stays missing");
        assert!(is_event_stream(Some("text/event-stream; charset=utf-8")) && !is_event_stream(Some("application/json")));
    }

    mod properties {
        use super::super::*;
        use proptest::prelude::*;

        static CORPUS: std::sync::LazyLock<Vec<(String, Vec<u8>)>> =
            std::sync::LazyLock::new(|| crate::fuzz_corpus::load("sse"));

        fn feed_in(stream: &[u8], cuts: &[usize], limit: usize) -> Assembled {
            let mut assembler = StreamAssembler::new(limit);
            let mut cuts: Vec<usize> = cuts.iter().map(|c| c % (stream.len() + 1)).collect();
            cuts.sort_unstable();
            let mut start = 0;
            for cut in cuts.into_iter().chain([stream.len()]) {
                assembler.feed(&stream[start..cut]);
                start = cut;
            }
            assembler.finish()
        }

        proptest! {
            #![proptest_config(ProptestConfig { cases: crate::fuzz_corpus::cases(2000), ..ProptestConfig::default() })]

            /// However the network cuts a stream into frames, the assembled answer is the same,
            /// and it is always JSON.
            #[test]
            fn framing_never_changes_the_assembled_answer(
                seed in 0..CORPUS.len(),
                flips in proptest::collection::vec((any::<usize>(), any::<u8>()), 0..4),
                cuts in proptest::collection::vec(any::<usize>(), 0..12),
                limit in prop_oneof![Just(1usize << 20), 1usize..200],
            ) {
                let mut stream = CORPUS[seed].1.clone();
                for (at, byte) in flips {
                    if !stream.is_empty() {
                        let at = at % stream.len();
                        stream[at] = byte;
                    }
                }
                let whole = feed_in(&stream, &[], limit);
                prop_assert_eq!(&feed_in(&stream, &cuts, limit), &whole);
                if let Some(response) = &whole.response {
                    prop_assert!(serde_json::from_str::<Value>(response).is_ok(), "not JSON: {}", response);
                }
            }

            #[test]
            fn arbitrary_bytes_never_panic(stream in proptest::collection::vec(any::<u8>(), 0..600), cuts in proptest::collection::vec(any::<usize>(), 0..8)) {
                feed_in(&stream, &cuts, 256);
            }
        }
    }
}
