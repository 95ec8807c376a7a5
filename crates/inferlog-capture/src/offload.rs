//! Oversize bodies to side files (`[endpoints.capture] oversize = "offload"`).
//!
//! On the log writer thread, after redaction: a request or response body longer than
//! `max_payload_bytes` is written whole (its original bytes, base64 decoded) to
//! `{payload table}/_offload/{date}/{request_id}.{request|response}`, and the record keeps a
//! prefix and the file's path relative to the table. The file is written (and in `fsync`
//! durability synced) before the record reaches the log, so a committed row never points at a
//! missing file. With the table on an object store the file goes to the same relative path
//! under the endpoint's local spool instead, and the committer uploads it beside the table
//! before the commit that names it. Delta's vacuum leaves folders starting with `_` alone; retention and
//! erasure delete the files of the rows they delete.

use base64::Engine;
use inferlog_core::record::{BodyEncoding, OFFLOAD_DIR, MAX_REQUEST_SIZE_EXCEEDED, MAX_RESPONSE_SIZE_EXCEEDED, OFFLOAD_FAILED};
use inferlog_core::Record;
use std::io::Write;
use std::path::{Path, PathBuf};


pub struct Offloader {
    /// Where the side files are written: the payload table's folder when it is local, else
    /// the endpoint's spool, from which the committer uploads them beside the table.
    pub dir: PathBuf,
    /// Bodies longer than this go to a file; the row keeps this many bytes.
    pub inline_max: usize,
    pub fsync: bool,
}

impl Offloader {
    pub fn apply(&self, record: &mut Record) {
        let date = chrono::DateTime::from_timestamp_millis(record.timestamp_ms)
            .unwrap_or_default()
            .format("%Y-%m-%d")
            .to_string();
        let id = record.request_id.clone();
        for (body, encoding, pointer, kind, cut_code) in [
            (&mut record.request, &record.request_encoding, &mut record.request_offload, "request", MAX_REQUEST_SIZE_EXCEEDED),
            (&mut record.response, &record.response_encoding, &mut record.response_offload, "response", MAX_RESPONSE_SIZE_EXCEEDED),
        ] {
            let Some(text) = body.as_mut() else { continue };
            if text.len() <= self.inline_max {
                continue;
            }
            let base64 = *encoding == Some(BodyEncoding::Base64);
            // Already cut (over offload_max_bytes, or the memory budget was spent): a side file
            // would pass for the whole body. The row keeps its prefix, as with `truncate`.
            if record.logging_error_codes.iter().any(|c| c == cut_code) {
                cut_text(text, self.inline_max, base64);
                continue;
            }
            let relative = format!("{OFFLOAD_DIR}/{date}/{id}.{kind}");
            let written = if base64 {
                base64::engine::general_purpose::STANDARD
                    .decode(text.as_bytes())
                    .map_err(std::io::Error::other)
                    .and_then(|bytes| self.write(&relative, &bytes))
            } else {
                self.write(&relative, text.as_bytes())
            };
            cut_text(text, self.inline_max, base64);
            match written {
                Ok(()) => *pointer = Some(relative),
                Err(e) => {
                    tracing::error!(endpoint = %record.endpoint_name, request_id = %id, error = %e, "cannot offload an oversize body; the row keeps its prefix");
                    metrics::counter!("inferlog_capture_offload_failures_total", "endpoint" => record.endpoint_name.clone()).increment(1);
                    for code in [cut_code, OFFLOAD_FAILED] {
                        if !record.logging_error_codes.iter().any(|c| c == code) {
                            record.logging_error_codes.push(code.to_string());
                        }
                    }
                }
            }
        }
    }

    fn write(&self, relative: &str, bytes: &[u8]) -> std::io::Result<()> {
        let path = self.dir.join(relative);
        let dir = path.parent().unwrap_or(Path::new("."));
        std::fs::create_dir_all(dir)?;
        // Written under a temporary name first: a file with the final name is always whole.
        let tmp = path.with_extension("tmp");
        let mut file = std::fs::File::create(&tmp)?;
        file.write_all(bytes)?;
        if self.fsync {
            file.sync_all()?;
        }
        std::fs::rename(&tmp, &path)?;
        if self.fsync {
            std::fs::File::open(dir)?.sync_all()?;
        }
        Ok(())
    }
}

/// Cuts `text` to its longest valid prefix within `max` bytes.
pub fn cut_text(text: &mut String, max: usize, base64: bool) {
    text.truncate(prefix_len(text, max, base64));
}

/// The longest prefix of `text` within `max` bytes that is still valid: on a character
/// boundary, and for base64 a whole number of 4-character groups.
fn prefix_len(text: &str, max: usize, base64: bool) -> usize {
    if base64 {
        return max.min(text.len()) / 4 * 4;
    }
    let mut end = max.min(text.len());
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    end
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(request: &str, response: Option<(&str, BodyEncoding)>) -> Record {
        Record {
            request_id: "r1".into(),
            endpoint_name: "iris".into(),
            timestamp_ms: 1_763_769_600_000, // 2025-11-22
            request: Some(request.into()),
            request_encoding: Some(inferlog_core::record::BodyEncoding::Utf8),
            response: response.map(|(t, _)| t.to_string()),
            response_encoding: response.map(|(_, e)| e),
            ..Default::default()
        }
    }

    #[test]
    fn oversize_bodies_go_whole_to_files_and_rows_keep_a_valid_prefix() {
        let dir = tempfile::tempdir().unwrap();
        let offloader = Offloader { dir: dir.path().to_path_buf(), inline_max: 5, fsync: true };
        let binary: Vec<u8> = (0..=255u8).collect();
        let encoded = base64::engine::general_purpose::STANDARD.encode(&binary);
        let mut r = record("aaññ-long request", Some((&encoded, BodyEncoding::Base64)));
        offloader.apply(&mut r);
        assert_eq!(r.request.as_deref(), Some("aañ"), "cut on a character boundary, not inside the second ñ");
        assert_eq!(r.request_offload.as_deref(), Some("_offload/2025-11-22/r1.request"));
        assert_eq!(std::fs::read_to_string(dir.path().join("_offload/2025-11-22/r1.request")).unwrap(), "aaññ-long request");
        assert_eq!(r.response.as_deref().map(str::len), Some(4), "whole base64 groups");
        assert_eq!(std::fs::read(dir.path().join("_offload/2025-11-22/r1.response")).unwrap(), binary, "the original bytes");
        assert!(r.logging_error_codes.is_empty());

        // Small bodies stay in the row.
        let mut small = record("tiny", None);
        offloader.apply(&mut small);
        assert_eq!((small.request.as_deref(), small.request_offload), (Some("tiny"), None));

        // A body cut before it got here is not passed off as whole.
        let mut cut = record("0123456789", None);
        cut.logging_error_codes.push(MAX_REQUEST_SIZE_EXCEEDED.into());
        offloader.apply(&mut cut);
        assert_eq!((cut.request.as_deref(), cut.request_offload), (Some("01234"), None));
    }

    #[test]
    fn a_body_that_cannot_be_written_keeps_its_prefix_and_says_so() {
        let dir = tempfile::tempdir().unwrap();
        // A file where the folder should be.
        std::fs::write(dir.path().join(OFFLOAD_DIR), "in the way").unwrap();
        let offloader = Offloader { dir: dir.path().to_path_buf(), inline_max: 4, fsync: false };
        let mut r = record("0123456789", None);
        offloader.apply(&mut r);
        assert_eq!((r.request.as_deref(), r.request_offload), (Some("0123"), None));
        assert_eq!(r.logging_error_codes, [MAX_REQUEST_SIZE_EXCEEDED, OFFLOAD_FAILED]);
    }
}
