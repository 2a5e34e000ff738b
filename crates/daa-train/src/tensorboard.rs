//! TensorBoard event files: scalars written as TensorBoard reads them, so runs compare in
//! `tensorboard --logdir runs/`.
//!
//! A file is a sequence of TFRecords, each `u64 length (LE), u32 masked CRC32C of the length,
//! the bytes, u32 masked CRC32C of the bytes`, whose bytes are an `Event` protobuf message
//! (TensorFlow's `event.proto` / `summary.proto`, the fields used here only). The first
//! record names the file version; each later one holds the scalars of one step.

use std::io::Write;
use std::path::{Path, PathBuf};

use prost::Message;

use crate::{Error, Result};

/// `tensorflow.Event`: the fields written here.
#[derive(Clone, PartialEq, prost::Message)]
pub struct EventProto {
    /// Seconds since the Unix epoch.
    #[prost(double, tag = "1")]
    pub wall_time: f64,
    /// The training step.
    #[prost(int64, tag = "2")]
    pub step: i64,
    /// What the event holds.
    #[prost(oneof = "What", tags = "3, 5, 7")]
    pub what: Option<What>,
}

/// `tensorflow.Event.what`.
#[derive(Clone, PartialEq, prost::Oneof)]
pub enum What {
    /// The first event of a file: `brain.Event:2`.
    #[prost(string, tag = "3")]
    FileVersion(String),
    /// Scalars.
    #[prost(message, tag = "5")]
    Summary(Summary),
    /// A session start (field 7; 6 is the deprecated `log_message`): TensorBoard drops the
    /// values read so far of its step and later (a resumed run re-runs those steps).
    #[prost(message, tag = "7")]
    SessionLog(SessionLog),
}

/// `tensorflow.Summary`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Summary {
    /// The values.
    #[prost(message, repeated, tag = "1")]
    pub value: Vec<SummaryValue>,
}

/// `tensorflow.Summary.Value` with a `simple_value`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct SummaryValue {
    /// The scalar's name (`loss/total`, `eval/psnr`, ...).
    #[prost(string, tag = "1")]
    pub tag: String,
    /// Its value. In summary.proto `simple_value` is a member of `oneof value`, so it is
    /// written even when 0 (a plain proto3 float of 0 is left out, and TensorBoard then sees
    /// no scalar: lambda's 0 at step 1 went missing that way).
    #[prost(oneof = "Value", tags = "2")]
    pub value: Option<Value>,
}

impl SummaryValue {
    /// The scalar, `None` when the value is of another kind (or absent).
    pub fn simple_value(&self) -> Option<f32> {
        self.value.as_ref().map(|Value::SimpleValue(v)| *v)
    }
}

/// `tensorflow.Summary.Value.value`: only `simple_value`.
#[derive(Clone, PartialEq, prost::Oneof)]
pub enum Value {
    /// A scalar.
    #[prost(float, tag = "2")]
    SimpleValue(f32),
}

/// `tensorflow.SessionLog`: only its status.
#[derive(Clone, PartialEq, prost::Message)]
pub struct SessionLog {
    /// 1 = START.
    #[prost(int32, tag = "1")]
    pub status: i32,
}

/// TFRecord's checksum: CRC32C, rotated right by 15 bits, plus a constant.
pub fn masked_crc(bytes: &[u8]) -> u32 {
    let crc = crc32c::crc32c(bytes);
    crc.rotate_right(15).wrapping_add(0xa282_ead8)
}

/// One TFRecord around `data`.
fn record(data: &[u8]) -> Vec<u8> {
    let len = (data.len() as u64).to_le_bytes();
    let mut out = Vec::with_capacity(data.len() + 16);
    out.extend_from_slice(&len);
    out.extend_from_slice(&masked_crc(&len).to_le_bytes());
    out.extend_from_slice(data);
    out.extend_from_slice(&masked_crc(data).to_le_bytes());
    out
}

/// The records of an event file's bytes, each checked against its two CRCs; an error names
/// the record and what is wrong.
pub fn read_records(bytes: &[u8]) -> std::result::Result<Vec<Vec<u8>>, String> {
    let mut out = Vec::new();
    let mut rest = bytes;
    while !rest.is_empty() {
        let n = out.len();
        let word = |b: &[u8], at: usize, len: usize| -> std::result::Result<Vec<u8>, String> {
            b.get(at..at + len)
                .map(<[u8]>::to_vec)
                .ok_or_else(|| format!("record {n} is cut short"))
        };
        let len_bytes = word(rest, 0, 8)?;
        let len_crc = u32::from_le_bytes(word(rest, 8, 4)?.try_into().unwrap_or_default());
        if masked_crc(&len_bytes) != len_crc {
            return Err(format!("record {n}: the length's CRC does not match"));
        }
        let len = u64::from_le_bytes(len_bytes.try_into().unwrap_or_default());
        let len = usize::try_from(len).map_err(|_| format!("record {n}: length {len}"))?;
        let data = word(rest, 12, len)?;
        let data_crc = u32::from_le_bytes(word(rest, 12 + len, 4)?.try_into().unwrap_or_default());
        if masked_crc(&data) != data_crc {
            return Err(format!("record {n}: the data's CRC does not match"));
        }
        out.push(data);
        rest = &rest[16 + len..];
    }
    Ok(out)
}

/// Decodes the events of an event file's bytes (records checked as in [`read_records`]).
pub fn read_events(bytes: &[u8]) -> std::result::Result<Vec<EventProto>, String> {
    read_records(bytes)?
        .iter()
        .enumerate()
        .map(|(i, r)| EventProto::decode(r.as_slice()).map_err(|e| format!("record {i}: {e}")))
        .collect()
}

/// Seconds since the Unix epoch.
fn now() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}

/// Appends scalar events to one new event file in a run folder.
pub struct EventWriter {
    file: std::fs::File,
    path: PathBuf,
}

impl EventWriter {
    /// Creates `dir/events.out.tfevents.<unix time>.daa.<pid>.<n>` (a new file per session: a
    /// resumed run adds one, which TensorBoard reads with the earlier ones) and writes the
    /// file-version event and a session start at the step after `start_step` (the step
    /// resumed from, 0 for a new run): TensorBoard then drops the values of that step and
    /// later from the files it read before, i.e. what an earlier session logged past the
    /// checkpoint resumed from (or all of an earlier run that failed before its first one).
    pub fn create(dir: &Path, start_step: usize) -> Result<Self> {
        // Two writers of one process in one second (a run, then its resume, in one test)
        // still get two names; TensorBoard reads a folder's files in name order.
        static COUNTER: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        let n = COUNTER.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let secs = now() as u64;
        let path = dir.join(format!(
            "events.out.tfevents.{secs}.daa.{}.{n}",
            std::process::id()
        ));
        let file = std::fs::OpenOptions::new()
            .create_new(true)
            .write(true)
            .open(&path)
            .map_err(|e| Error::io(&path, e))?;
        let mut w = Self { file, path };
        w.write(0, What::FileVersion("brain.Event:2".into()))?;
        w.write(start_step + 1, What::SessionLog(SessionLog { status: 1 }))?;
        Ok(w)
    }

    /// The file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    fn write(&mut self, step: usize, what: What) -> Result<()> {
        let event = EventProto {
            wall_time: now(),
            step: step as i64,
            what: Some(what),
        };
        // One write per record, so a reader never sees half of one (but for a full disk).
        self.file
            .write_all(&record(&event.encode_to_vec()))
            .map_err(|e| Error::io(&self.path, e))
    }

    /// The scalars `(tag, value)` of `step`, in one event.
    pub fn scalars(&mut self, step: usize, values: &[(String, f64)]) -> Result<()> {
        let value = values
            .iter()
            .map(|(tag, v)| SummaryValue {
                tag: tag.clone(),
                value: Some(Value::SimpleValue(*v as f32)),
            })
            .collect();
        self.write(step, What::Summary(Summary { value }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_checksum_is_crc32c_masked_as_tfrecord_says() {
        // CRC32C's check value (RFC 3720): crc32c("123456789") = 0xE3069283.
        assert_eq!(crc32c::crc32c(b"123456789"), 0xE306_9283);
        let crc = 0xE306_9283u32;
        // The mask as TensorFlow's crc32c.h writes it, shifts and all, to check ours.
        #[allow(clippy::manual_rotate)]
        let masked = ((crc >> 15) | (crc << 17)).wrapping_add(0xa282_ead8);
        assert_eq!(masked_crc(b"123456789"), masked);
    }

    #[test]
    fn records_round_trip_and_a_flipped_byte_is_caught() {
        let bytes: Vec<u8> = [b"".as_slice(), b"abc", &[7u8; 300]]
            .iter()
            .flat_map(|d| record(d))
            .collect();
        let records = read_records(&bytes).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(records, vec![vec![], b"abc".to_vec(), vec![7u8; 300]]);
        for at in [3, 9, 30, bytes.len() - 1] {
            let mut bad = bytes.clone();
            bad[at] ^= 1;
            assert!(read_records(&bad).is_err(), "flipped byte {at}");
        }
        assert!(
            read_records(&bytes[..bytes.len() - 2]).is_err(),
            "cut short"
        );
    }

    #[test]
    fn an_event_file_holds_the_version_then_tagged_scalars() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let mut w = EventWriter::create(dir.path(), 0).unwrap_or_else(|e| panic!("{e}"));
        w.scalars(3, &[("loss/total".into(), 0.25), ("lambda".into(), 0.0)])
            .unwrap_or_else(|e| panic!("{e}"));
        let bytes = std::fs::read(w.path()).unwrap_or_else(|e| panic!("{e}"));
        let events = read_events(&bytes).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(events.len(), 3);
        assert_eq!(
            events[1].what,
            Some(What::SessionLog(SessionLog { status: 1 }))
        );
        assert_eq!(events[1].step, 1);
        assert_eq!(
            events[0].what,
            Some(What::FileVersion("brain.Event:2".into()))
        );
        let Some(What::Summary(s)) = &events[2].what else {
            panic!("{:?}", events[2])
        };
        assert_eq!(events[2].step, 3);
        let tags: Vec<(&str, Option<f32>)> = s
            .value
            .iter()
            .map(|v| (v.tag.as_str(), v.simple_value()))
            .collect();
        assert_eq!(
            tags,
            vec![("loss/total", Some(0.25)), ("lambda", Some(0.0))]
        );
        // A 0 is written, not left out as a proto3 default: the lambda value's bytes end in
        // field 2 (32-bit, 0x15) and four zero bytes.
        let rec = &read_records(&bytes).unwrap_or_default()[2];
        assert!(rec.ends_with(&[b'a', 0x15, 0, 0, 0, 0]), "{rec:?}");
        // The version event's bytes as protobuf writes them: field 1 (double), 2 (varint 0
        // omitted), 3 (string of 13 bytes).
        let rec = &read_records(&bytes).unwrap_or_default()[0];
        assert_eq!(rec[0], 0x09, "wall_time: field 1, 64-bit");
        assert_eq!(&rec[9..11], &[0x1a, 13], "file_version: field 3, 13 bytes");
        assert_eq!(&rec[11..], b"brain.Event:2");
    }

    #[test]
    fn a_resumed_writer_starts_a_session_in_field_7_after_its_step() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let w = EventWriter::create(dir.path(), 4).unwrap_or_else(|e| panic!("{e}"));
        let bytes = std::fs::read(w.path()).unwrap_or_else(|e| panic!("{e}"));
        let rec = &read_records(&bytes).unwrap_or_default()[1];
        // wall_time (9 bytes), step 5 (field 2 varint: 0x10 0x05), session_log (field 7,
        // length-delimited: 0x3a) holding status 1 (0x08 0x01). TensorBoard reads field 7.
        assert_eq!(&rec[9..], &[0x10, 5, 0x3a, 2, 0x08, 1]);
    }
}
