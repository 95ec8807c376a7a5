//! The write-ahead log: a folder of segment files per endpoint.
//!
//! On-disk format. A segment is named after the LSN of its first record,
//! `{first_lsn:020}.wal`, and holds frames back to back:
//!
//! ```text
//! | payload_len: u32 LE | crc32: u32 LE | lsn: u64 LE | payload (JSON of a Record) |
//! ```
//!
//! The CRC covers the LSN and the payload. A segment's first frame is its header: LSN 0 and
//! the JSON `{"inferlog_wal": 1, "writer": "<instance id>"}`, the identity of the gateway that
//! commits its records (the table's application transaction is named after it, so a log read
//! under another identity would be committed twice). Readers skip it (records have LSN >= 1);
//! segments written before headers existed have none. Only the last segment is ever appended
//! to; a segment followed by another one is sealed. On start the writer truncates a torn tail
//! (a frame cut short or failing its CRC) of the last segment: that frame was never
//! acknowledged. A reader treats an incomplete frame at the end of the last segment as
//! "not written yet" and comes back later.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

const HEADER: usize = 16;
const SUFFIX: &str = ".wal";
/// Upper bound on one frame's payload; anything larger in a header is corruption.
const MAX_FRAME: usize = 256 << 20;

fn segment_name(first_lsn: u64) -> String {
    format!("{first_lsn:020}{SUFFIX}")
}

/// Segments in the folder as (first LSN, path), in LSN order.
pub fn list_segments(dir: &Path) -> io::Result<Vec<(u64, PathBuf)>> {
    let mut out = Vec::new();
    for entry in fs::read_dir(dir)? {
        let entry = entry?;
        let name = entry.file_name();
        let Some(name) = name.to_str() else { continue };
        if let Some(stem) = name.strip_suffix(SUFFIX) {
            if let Ok(first) = stem.parse::<u64>() {
                out.push((first, entry.path()));
            }
        }
    }
    out.sort_by_key(|(first, _)| *first);
    Ok(out)
}

/// Total bytes of all segments in the folder.
pub fn size_on_disk(dir: &Path) -> io::Result<u64> {
    let mut total = 0;
    for (_, path) in list_segments(dir)? {
        total += fs::metadata(path)?.len();
    }
    Ok(total)
}

/// The writer identity in a segment's header frame; `None` for a segment without one.
fn segment_writer(path: &Path) -> io::Result<Option<String>> {
    let mut head = Vec::with_capacity(HEADER + 256);
    File::open(path)?.take((HEADER + 1024) as u64).read_to_end(&mut head)?;
    Ok(match parse_frame(&head) {
        Frame::Complete { lsn: 0, payload, .. } => serde_json::from_slice::<SegmentHeader>(payload).ok().map(|h| h.writer),
        _ => None,
    })
}

#[derive(serde::Serialize, serde::Deserialize)]
struct SegmentHeader {
    inferlog_wal: u32,
    writer: String,
}

/// The writer identity recorded in the log's segment headers; `None` when no segment has a
/// header (an empty folder, or segments from before headers). Segments of two different
/// writers in one folder are an error: that log cannot be committed under either identity.
pub fn log_writer(dir: &Path) -> io::Result<Option<String>> {
    let segments = match list_segments(dir) {
        Ok(s) => s,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e),
    };
    let mut found: Option<String> = None;
    for (_, path) in segments {
        match segment_writer(&path) {
            Ok(Some(writer)) => match &found {
                Some(f) if *f != writer => {
                    return Err(io::Error::new(
                        io::ErrorKind::InvalidData,
                        format!("segments of two writers ({f} and {writer}) in one log"),
                    ))
                }
                _ => found = Some(writer),
            },
            Ok(None) => {}
            // Deleted by the committer since it was listed.
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(e),
        }
    }
    Ok(found)
}

enum Frame<'a> {
    Complete { lsn: u64, payload: &'a [u8], len: usize },
    Incomplete,
    Corrupt,
}

fn parse_frame(buf: &[u8]) -> Frame<'_> {
    if buf.len() < HEADER {
        return Frame::Incomplete;
    }
    let len = u32::from_le_bytes(buf[0..4].try_into().unwrap()) as usize;
    let crc = u32::from_le_bytes(buf[4..8].try_into().unwrap());
    if len > MAX_FRAME {
        return Frame::Corrupt;
    }
    if buf.len() < HEADER + len {
        return Frame::Incomplete;
    }
    let mut hasher = crc32fast::Hasher::new();
    hasher.update(&buf[8..HEADER + len]);
    if hasher.finalize() != crc {
        return Frame::Corrupt;
    }
    Frame::Complete {
        lsn: u64::from_le_bytes(buf[8..16].try_into().unwrap()),
        payload: &buf[HEADER..HEADER + len],
        len: HEADER + len,
    }
}

fn encode_frame(out: &mut Vec<u8>, lsn: u64, payload: &[u8]) {
    let mut hasher = crc32fast::Hasher::new();
    hasher.update(&lsn.to_le_bytes());
    hasher.update(payload);
    out.extend_from_slice(&(payload.len() as u32).to_le_bytes());
    out.extend_from_slice(&hasher.finalize().to_le_bytes());
    out.extend_from_slice(&lsn.to_le_bytes());
    out.extend_from_slice(payload);
}

/// Appends frames to the last segment. Owned by one thread.
pub struct WalWriter {
    dir: PathBuf,
    /// The identity written into each segment's header.
    writer: String,
    file: File,
    /// First LSN of the active segment (its name).
    segment_first: u64,
    segment_len: u64,
    /// Bytes of the active segment's header frame (0 for a segment from before headers).
    header_len: u64,
    next_lsn: u64,
    segment_max: u64,
    size: Arc<AtomicU64>,
    buf: Vec<u8>,
    /// The last write failed: the next one must not append behind what it may have left.
    broken: bool,
}

/// The log in a folder belongs to another writer identity than the one opening it.
fn foreign_log(dir: &Path, found: &str, writer: &str) -> io::Error {
    io::Error::new(
        io::ErrorKind::InvalidData,
        format!(
            "the log in {} was written by writer {found}, not {writer}: committing it under another identity would \
             commit its records twice (was instance.id replaced, or the log copied from another data dir?)",
            dir.display()
        ),
    )
}

impl WalWriter {
    /// Opens the log in `dir` as `writer`, recovering the last segment. `min_next_lsn` is the
    /// smallest LSN the next record may take (one past what the table already holds), so that
    /// LSNs keep increasing even when the folder was emptied. Refuses a log whose segment
    /// headers name another writer.
    pub fn open(dir: &Path, writer: &str, min_next_lsn: u64, segment_max: u64, size: Arc<AtomicU64>) -> io::Result<Self> {
        fs::create_dir_all(dir)?;
        if let Some(found) = log_writer(dir)? {
            if found != writer {
                return Err(foreign_log(dir, &found, writer));
            }
        }
        let segments = list_segments(dir)?;
        let opened = match segments.last() {
            Some((first, path)) => {
                let mut file = OpenOptions::new().read(true).write(true).open(path)?;
                let mut data = Vec::new();
                file.read_to_end(&mut data)?;
                let mut pos = 0;
                let mut next = *first;
                let mut header_len = 0;
                while let Frame::Complete { lsn, len, .. } = parse_frame(&data[pos..]) {
                    if lsn == 0 && pos == 0 {
                        header_len = len as u64;
                    } else {
                        next = lsn + 1;
                    }
                    pos += len;
                }
                if pos < data.len() {
                    tracing::warn!(
                        segment = %path.display(),
                        torn_bytes = data.len() - pos,
                        "truncating a torn write at the end of the capture log"
                    );
                    file.set_len(pos as u64)?;
                    file.sync_data()?;
                }
                file.seek(SeekFrom::Start(pos as u64))?;
                Some((file, *first, pos as u64, header_len, next))
            }
            None => None,
        };
        let (file, segment_first, segment_len, header_len, next_lsn) = match opened {
            Some(o) => o,
            None => {
                let first = min_next_lsn.max(1);
                let (file, header_len) = create_segment(dir, writer, first)?;
                (file, first, header_len, header_len, first)
            }
        };
        let mut wal = WalWriter {
            dir: dir.to_path_buf(),
            writer: writer.to_string(),
            file,
            segment_first,
            segment_len,
            header_len,
            next_lsn,
            segment_max,
            size,
            buf: Vec::with_capacity(1 << 20),
            broken: false,
        };
        if wal.next_lsn < min_next_lsn {
            // The table already holds LSNs the log has forgotten (its folder was lost), or
            // every record of the active segment: continue after them in a new segment, so
            // that new records are not taken for replays and the committed ones can go.
            wal.start_segment(min_next_lsn)?;
        } else if wal.next_lsn == min_next_lsn {
            wal.roll()?;
        }
        wal.size.store(size_on_disk(dir)?, Ordering::Relaxed);
        Ok(wal)
    }

    pub fn next_lsn(&self) -> u64 {
        self.next_lsn
    }

    /// Whether the active segment holds any record.
    pub fn has_records(&self) -> bool {
        self.segment_len > self.header_len
    }

    /// Seals the current segment, if it holds any record, and starts the next one, so that
    /// the committer can delete it once it is committed.
    pub fn roll(&mut self) -> io::Result<()> {
        if self.has_records() {
            let next = self.next_lsn;
            self.start_segment(next)?;
        }
        Ok(())
    }

    fn start_segment(&mut self, first: u64) -> io::Result<()> {
        let (file, header_len) = create_segment(&self.dir, &self.writer, first)?;
        self.size.fetch_add(header_len, Ordering::Relaxed);
        self.file = file;
        self.segment_first = first;
        self.segment_len = header_len;
        self.header_len = header_len;
        self.next_lsn = first;
        Ok(())
    }

    /// After a failed write: continue at `next_lsn` somewhere no reader has looked. A segment
    /// holding records gets a successor; one holding none (the failed write was cut back to
    /// its header) is renamed to the new first LSN instead, so repeated failures (a full disk)
    /// never leave a trail of empty segments behind.
    fn recover_from_failed_write(&mut self) -> io::Result<()> {
        let next = self.next_lsn;
        if self.has_records() || self.header_len == 0 {
            return self.start_segment(next);
        }
        if self.segment_first != next {
            let from = self.dir.join(segment_name(self.segment_first));
            fs::rename(&from, self.dir.join(segment_name(next)))?;
            sync_dir(&self.dir);
            self.segment_first = next;
        }
        Ok(())
    }

    /// Appends one frame per payload with one write. Returns the LSN of the last one. On an
    /// I/O error the segment is cut back to its previous length, so no torn frame is left
    /// in front of later writes.
    pub fn append<'a>(&mut self, payloads: impl IntoIterator<Item = &'a [u8]>) -> io::Result<u64> {
        if self.broken {
            self.recover_from_failed_write()?;
            self.broken = false;
        } else if self.segment_len >= self.segment_max {
            let next = self.next_lsn;
            self.start_segment(next)?;
        }
        self.buf.clear();
        let mut lsn = self.next_lsn;
        for payload in payloads {
            encode_frame(&mut self.buf, lsn, payload);
            lsn += 1;
        }
        if let Err(e) = self.file.write_all(&self.buf) {
            // Part of the group may be on disk, and a reader may already have seen it: its
            // LSNs are never handed out again, and the next group goes where no reader looked.
            let _ = self.file.set_len(self.segment_len);
            self.next_lsn = lsn;
            self.broken = true;
            return Err(e);
        }
        self.segment_len += self.buf.len() as u64;
        self.size.fetch_add(self.buf.len() as u64, Ordering::Relaxed);
        self.next_lsn = lsn;
        Ok(lsn - 1)
    }

    /// Flushes the active segment to stable storage.
    pub fn sync(&mut self) -> io::Result<()> {
        self.file.sync_data()
    }
}

fn sync_dir(dir: &Path) {
    if let Ok(d) = File::open(dir) {
        let _ = d.sync_all();
    }
}

/// Creates segment `first` with its header frame; returns the file and the header's length.
/// A segment whose header cannot be written (a full disk) is removed again.
fn create_segment(dir: &Path, writer: &str, first: u64) -> io::Result<(File, u64)> {
    let path = dir.join(segment_name(first));
    let mut file = OpenOptions::new().create(true).read(true).append(true).open(&path)?;
    let header = serde_json::to_vec(&SegmentHeader { inferlog_wal: 1, writer: writer.to_string() })?;
    let mut frame = Vec::with_capacity(HEADER + header.len());
    encode_frame(&mut frame, 0, &header);
    let written = file.write_all(&frame).and_then(|()| file.sync_data());
    if let Err(e) = written {
        drop(file);
        let _ = fs::remove_file(&path);
        return Err(e);
    }
    // Make the new name durable, so a crash cannot lose the segment that holds the LSN floor.
    sync_dir(dir);
    Ok((file, frame.len() as u64))
}

/// One record read back from the log.
#[derive(Debug)]
pub struct LogEntry {
    pub lsn: u64,
    pub payload: Vec<u8>,
}

/// Reads records after a given LSN. Remembers where it stopped so a tailing reader does not
/// rescan a segment.
pub struct WalReader {
    dir: PathBuf,
    /// (segment first LSN, byte offset, LSN of the frame at that offset)
    cursor: Option<(u64, u64, u64)>,
    /// Frames found corrupt in sealed segments and skipped.
    pub corrupt_frames: u64,
}

impl WalReader {
    pub fn new(dir: &Path) -> Self {
        WalReader {
            dir: dir.to_path_buf(),
            cursor: None,
            corrupt_frames: 0,
        }
    }

    /// Up to `max_records` records (and roughly `max_bytes`) with LSN > `after`, in order.
    pub fn read_after(&mut self, after: u64, max_records: usize, max_bytes: usize) -> io::Result<Vec<LogEntry>> {
        let segments = list_segments(&self.dir)?;
        let mut out = Vec::new();
        let mut bytes = 0usize;
        let wanted = after + 1;
        // The segment holding `wanted` is the last one starting at or before it.
        let start_idx = match segments.iter().rposition(|(first, _)| *first <= wanted) {
            Some(i) => i,
            None => 0,
        };
        for (idx, (first, path)) in segments.iter().enumerate().skip(start_idx) {
            let sealed = idx + 1 < segments.len();
            let offset = match self.cursor {
                Some((seg, off, lsn)) if seg == *first && lsn <= wanted => off,
                _ => 0,
            };
            let mut file = match File::open(path) {
                Ok(f) => f,
                Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
                Err(e) => return Err(e),
            };
            file.seek(SeekFrom::Start(offset))?;
            let mut data = Vec::new();
            file.read_to_end(&mut data)?;
            let mut pos = 0usize;
            loop {
                match parse_frame(&data[pos..]) {
                    Frame::Complete { lsn, payload, len } => {
                        if lsn >= wanted {
                            if out.len() >= max_records || (bytes >= max_bytes && !out.is_empty()) {
                                self.cursor = Some((*first, offset + pos as u64, lsn));
                                return Ok(out);
                            }
                            bytes += payload.len();
                            out.push(LogEntry {
                                lsn,
                                payload: payload.to_vec(),
                            });
                        }
                        pos += len;
                    }
                    Frame::Incomplete if !sealed => break,
                    Frame::Incomplete | Frame::Corrupt => {
                        if pos < data.len() {
                            self.corrupt_frames += 1;
                            tracing::error!(
                                segment = %path.display(),
                                offset = offset + pos as u64,
                                "corrupt frame in the capture log; skipping the rest of the segment"
                            );
                        }
                        break;
                    }
                }
            }
            let next_lsn = out.last().map(|e| e.lsn + 1).unwrap_or(wanted);
            self.cursor = Some((*first, offset + pos as u64, next_lsn));
        }
        Ok(out)
    }
}

/// Deletes every sealed segment whose records all have LSN <= `committed`. The last segment
/// is always kept: its name carries the LSN floor across restarts. Returns bytes freed.
pub fn delete_committed(dir: &Path, committed: u64, size: &AtomicU64) -> io::Result<u64> {
    let segments = list_segments(dir)?;
    let mut freed = 0;
    for pair in segments.windows(2) {
        let (_, path) = &pair[0];
        let (next_first, _) = pair[1];
        if next_first <= committed + 1 {
            let len = fs::metadata(path).map(|m| m.len()).unwrap_or(0);
            fs::remove_file(path)?;
            freed += len;
        } else {
            break;
        }
    }
    if freed > 0 {
        size.fetch_sub(freed.min(size.load(Ordering::Relaxed)), Ordering::Relaxed);
    }
    Ok(freed)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn writer(dir: &Path, floor: u64, seg_max: u64) -> WalWriter {
        WalWriter::open(dir, "test-writer", floor, seg_max, Arc::new(AtomicU64::new(0))).unwrap()
    }

    fn lsns(entries: &[LogEntry]) -> Vec<u64> {
        entries.iter().map(|e| e.lsn).collect()
    }

    #[test]
    fn reader_sees_appended_records_in_order_across_segments() {
        let dir = tempfile::tempdir().unwrap();
        let mut w = writer(dir.path(), 1, 64);
        for i in 0..10u32 {
            w.append([format!("record-{i}").as_bytes()]).unwrap();
        }
        assert!(list_segments(dir.path()).unwrap().len() > 1);
        let mut r = WalReader::new(dir.path());
        let all = r.read_after(0, 100, usize::MAX).unwrap();
        assert_eq!(lsns(&all), (1..=10).collect::<Vec<_>>());
        assert_eq!(all[3].payload, b"record-3");
        let tail = WalReader::new(dir.path()).read_after(7, 100, usize::MAX).unwrap();
        assert_eq!(lsns(&tail), vec![8, 9, 10]);
    }

    #[test]
    fn tailing_reader_resumes_where_it_stopped() {
        let dir = tempfile::tempdir().unwrap();
        let mut w = writer(dir.path(), 1, 1 << 20);
        w.append([&b"a"[..], b"b", b"c"]).unwrap();
        let mut r = WalReader::new(dir.path());
        assert_eq!(lsns(&r.read_after(0, 2, usize::MAX).unwrap()), vec![1, 2]);
        assert_eq!(lsns(&r.read_after(2, 10, usize::MAX).unwrap()), vec![3]);
        w.append([&b"d"[..]]).unwrap();
        assert_eq!(lsns(&r.read_after(3, 10, usize::MAX).unwrap()), vec![4]);
        assert!(r.read_after(4, 10, usize::MAX).unwrap().is_empty());
    }

    #[test]
    fn writer_truncates_torn_tail_and_continues_numbering() {
        let dir = tempfile::tempdir().unwrap();
        let mut w = writer(dir.path(), 1, 1 << 20);
        w.append([&b"first"[..], b"second"]).unwrap();
        drop(w);
        let (_, path) = list_segments(dir.path()).unwrap().pop().unwrap();
        let mut f = OpenOptions::new().append(true).open(&path).unwrap();
        f.write_all(&[9, 0, 0, 0, 1, 2]).unwrap(); // half a header: a crash mid-write
        drop(f);
        let mut r = WalReader::new(dir.path());
        assert_eq!(lsns(&r.read_after(0, 10, usize::MAX).unwrap()), vec![1, 2]);
        let mut w = writer(dir.path(), 1, 1 << 20);
        assert_eq!(w.next_lsn(), 3);
        w.append([&b"third"[..]]).unwrap();
        let all = WalReader::new(dir.path()).read_after(0, 10, usize::MAX).unwrap();
        assert_eq!(lsns(&all), vec![1, 2, 3]);
        assert_eq!(all[2].payload, b"third");
    }

    #[test]
    fn floor_from_table_keeps_lsns_increasing_after_log_loss() {
        let dir = tempfile::tempdir().unwrap();
        let mut w = writer(dir.path(), 501, 1 << 20);
        assert_eq!(w.append([&b"x"[..]]).unwrap(), 501);
        drop(w);
        // A floor below what the log holds changes nothing.
        let w = writer(dir.path(), 10, 1 << 20);
        assert_eq!(w.next_lsn(), 502);
    }

    #[test]
    fn only_fully_committed_sealed_segments_are_deleted() {
        let dir = tempfile::tempdir().unwrap();
        let size = Arc::new(AtomicU64::new(0));
        let mut w = WalWriter::open(dir.path(), "test-writer", 1, 40, size.clone()).unwrap();
        for _ in 0..6 {
            w.append([&b"0123456789abcdef0123456789"[..]]).unwrap();
        }
        let before = list_segments(dir.path()).unwrap();
        assert_eq!(before.len(), 6);
        delete_committed(dir.path(), 3, &size).unwrap();
        let after: Vec<u64> = list_segments(dir.path()).unwrap().iter().map(|s| s.0).collect();
        assert_eq!(after, vec![4, 5, 6]);
        delete_committed(dir.path(), 100, &size).unwrap();
        let after: Vec<u64> = list_segments(dir.path()).unwrap().iter().map(|s| s.0).collect();
        assert_eq!(after, vec![6], "the active segment is kept");
        assert_eq!(size.load(Ordering::Relaxed), size_on_disk(dir.path()).unwrap());
    }

    #[test]
    fn corrupt_frame_in_sealed_segment_is_skipped_not_fatal() {
        let dir = tempfile::tempdir().unwrap();
        let mut w = writer(dir.path(), 1, 30);
        for p in [&b"aaaaaaaaaaaaaaaa"[..], b"bbbbbbbbbbbbbbbb", b"cccccccccccccccc"] {
            w.append([p]).unwrap();
        }
        let (_, first) = list_segments(dir.path()).unwrap().remove(0);
        let mut data = fs::read(&first).unwrap();
        data[20] ^= 0xff;
        fs::write(&first, data).unwrap();
        let mut r = WalReader::new(dir.path());
        assert_eq!(lsns(&r.read_after(0, 10, usize::MAX).unwrap()), vec![2, 3]);
        assert_eq!(r.corrupt_frames, 1);
    }

    #[test]
    fn repeated_failed_writes_leave_no_trail_of_empty_segments() {
        let dir = tempfile::tempdir().unwrap();
        let mut w = writer(dir.path(), 1, 1 << 20);
        w.append([&b"kept"[..]]).unwrap();
        // Every write fails from here on, as on a full disk: each attempt first recovers from
        // the previous failure, then fails again.
        for _ in 0..100 {
            let active = dir.path().join(segment_name(w.segment_first));
            w.file = File::open(active).unwrap();
            assert!(w.append([&b"lost"[..]]).is_err());
            w.recover_from_failed_write().unwrap();
            w.broken = false;
        }
        assert_eq!(list_segments(dir.path()).unwrap().len(), 2, "one successor segment, renamed on each failure");
        w.file = OpenOptions::new().append(true).open(dir.path().join(segment_name(w.segment_first))).unwrap();
        let last = w.append([&b"after"[..]]).unwrap();
        let all = WalReader::new(dir.path()).read_after(0, 10, usize::MAX).unwrap();
        assert_eq!(all.iter().map(|e| e.payload.as_slice()).collect::<Vec<_>>(), vec![&b"kept"[..], b"after"]);
        assert_eq!(all[1].lsn, last);
        assert_eq!(WalWriter::open(dir.path(), "test-writer", 1, 1 << 20, Arc::new(AtomicU64::new(0))).unwrap().next_lsn(), last + 1);
    }

    #[test]
    fn a_log_is_opened_only_by_the_writer_its_headers_name() {
        let dir = tempfile::tempdir().unwrap();
        writer(dir.path(), 1, 1 << 20).append([&b"x"[..]]).unwrap();
        assert_eq!(log_writer(dir.path()).unwrap().as_deref(), Some("test-writer"));
        let err = WalWriter::open(dir.path(), "another", 1, 1 << 20, Arc::new(AtomicU64::new(0))).err().expect("refused");
        assert!(err.to_string().contains("test-writer") && err.to_string().contains("instance.id"), "{err}");
    }
}
