//! Host-side helpers: decoding ring-buffer records into owned, checked values.

use crate::{ExecEvent, COMM_LEN, EXEC_EVENT_SIZE, FILENAME_LEN};

/// Why a ring-buffer record could not be decoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DecodeError {
    /// The record is not `EXEC_EVENT_SIZE` bytes long.
    Length { got: usize },
    /// `filename_len` points past the filename buffer.
    FilenameLength { len: u32 },
}

/// Decode one ring-buffer record. Pure and length-checked: a short, long or inconsistent
/// record is an error, never a panic or an out-of-bounds read.
pub fn decode_exec_event(bytes: &[u8]) -> Result<ExecEvent, DecodeError> {
    if bytes.len() != EXEC_EVENT_SIZE {
        return Err(DecodeError::Length { got: bytes.len() });
    }
    let u64_at = |o: usize| u64::from_ne_bytes(bytes[o..o + 8].try_into().unwrap());
    let u32_at = |o: usize| u32::from_ne_bytes(bytes[o..o + 4].try_into().unwrap());
    let mut comm = [0u8; COMM_LEN];
    comm.copy_from_slice(&bytes[40..40 + COMM_LEN]);
    let mut filename = [0u8; FILENAME_LEN];
    filename.copy_from_slice(&bytes[56..56 + FILENAME_LEN]);
    let ev = ExecEvent {
        ktime_ns: u64_at(0),
        cgroup_id: u64_at(8),
        tgid: u32_at(16),
        pid: u32_at(20),
        uid: u32_at(24),
        gid: u32_at(28),
        flags: u32_at(32),
        filename_len: u32_at(36),
        comm,
        filename,
    };
    if ev.filename_len as usize >= FILENAME_LEN {
        return Err(DecodeError::FilenameLength {
            len: ev.filename_len,
        });
    }
    Ok(ev)
}

impl ExecEvent {
    /// The comm up to its first NUL.
    pub fn comm_bytes(&self) -> &[u8] {
        until_nul(&self.comm)
    }
    /// The exec'd filename up to `filename_len` (and never past a NUL).
    pub fn filename_bytes(&self) -> &[u8] {
        until_nul(&self.filename[..self.filename_len as usize])
    }
}

fn until_nul(b: &[u8]) -> &[u8] {
    match b.iter().position(|&c| c == 0) {
        Some(n) => &b[..n],
        None => b,
    }
}

#[cfg(test)]
mod tests {
    extern crate std;
    use super::*;
    use core::mem::offset_of;

    #[test]
    fn offsets_match_the_decoder() {
        assert_eq!(offset_of!(ExecEvent, ktime_ns), 0);
        assert_eq!(offset_of!(ExecEvent, cgroup_id), 8);
        assert_eq!(offset_of!(ExecEvent, tgid), 16);
        assert_eq!(offset_of!(ExecEvent, pid), 20);
        assert_eq!(offset_of!(ExecEvent, uid), 24);
        assert_eq!(offset_of!(ExecEvent, gid), 28);
        assert_eq!(offset_of!(ExecEvent, flags), 32);
        assert_eq!(offset_of!(ExecEvent, filename_len), 36);
        assert_eq!(offset_of!(ExecEvent, comm), 40);
        assert_eq!(offset_of!(ExecEvent, filename), 56);
    }

    fn record(tgid: u32, comm: &[u8], filename: &[u8]) -> std::vec::Vec<u8> {
        let mut ev = ExecEvent {
            ktime_ns: 123,
            cgroup_id: 1,
            tgid,
            pid: tgid,
            uid: 1000,
            gid: 1000,
            flags: 0,
            filename_len: filename.len() as u32,
            comm: [0; COMM_LEN],
            filename: [0; FILENAME_LEN],
        };
        ev.comm[..comm.len()].copy_from_slice(comm);
        ev.filename[..filename.len()].copy_from_slice(filename);
        // SAFETY: ExecEvent is repr(C) without padding (size asserted), so every byte is initialised.
        let bytes = unsafe {
            core::slice::from_raw_parts(&ev as *const ExecEvent as *const u8, EXEC_EVENT_SIZE)
        };
        bytes.to_vec()
    }

    #[test]
    fn decodes_a_record() {
        let r = record(42, b"ffmpeg", b"/usr/bin/ffmpeg");
        let ev = decode_exec_event(&r).unwrap();
        assert_eq!(ev.tgid, 42);
        assert_eq!(ev.uid, 1000);
        assert_eq!(ev.comm_bytes(), b"ffmpeg");
        assert_eq!(ev.filename_bytes(), b"/usr/bin/ffmpeg");
    }

    #[test]
    fn rejects_wrong_lengths() {
        let r = record(1, b"x", b"/x");
        assert_eq!(
            decode_exec_event(&r[..311]).err(),
            Some(DecodeError::Length { got: 311 })
        );
        let mut long = r.clone();
        long.push(0);
        assert_eq!(
            decode_exec_event(&long).err(),
            Some(DecodeError::Length { got: 313 })
        );
        assert_eq!(
            decode_exec_event(&[]).err(),
            Some(DecodeError::Length { got: 0 })
        );
    }

    #[test]
    fn rejects_filename_len_past_the_buffer() {
        let mut r = record(1, b"x", b"/x");
        r[36..40].copy_from_slice(&(FILENAME_LEN as u32).to_ne_bytes());
        assert_eq!(
            decode_exec_event(&r).err(),
            Some(DecodeError::FilenameLength {
                len: FILENAME_LEN as u32
            })
        );
    }

    #[test]
    fn full_comm_without_nul_is_kept_whole() {
        let r = record(1, b"abcdefghijklmnop", b"/x");
        let ev = decode_exec_event(&r).unwrap();
        assert_eq!(ev.comm_bytes(), b"abcdefghijklmnop");
    }
}
