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
    let name_at = |o: usize| {
        let mut n = [0u8; COMM_LEN];
        n.copy_from_slice(&bytes[o..o + COMM_LEN]);
        n
    };
    let mut filename = [0u8; FILENAME_LEN];
    filename.copy_from_slice(&bytes[104..104 + FILENAME_LEN]);
    let ev = ExecEvent {
        ktime_ns: u64_at(0),
        start_ns: u64_at(8),
        cgroup_id: u64_at(16),
        tgid: u32_at(24),
        pid: u32_at(28),
        ppid: u32_at(32),
        uid: u32_at(36),
        gid: u32_at(40),
        flags: u32_at(44),
        filename_len: u32_at(48),
        pidns_level: u32_at(52),
        comm: name_at(56),
        exe_name: name_at(72),
        argv0_name: name_at(88),
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
    /// The exe's basename (first 15 bytes) up to its first NUL.
    pub fn exe_name_bytes(&self) -> &[u8] {
        until_nul(&self.exe_name)
    }
    /// argv[0]'s basename (first 15 bytes) up to its first NUL.
    pub fn argv0_name_bytes(&self) -> &[u8] {
        until_nul(&self.argv0_name)
    }
    /// The exec'd filename up to `filename_len` (and never past a NUL).
    pub fn filename_bytes(&self) -> &[u8] {
        until_nul(&self.filename[..self.filename_len as usize])
    }
    /// The bytes of the record, as the kernel writes them (tests and replays).
    pub fn to_bytes(&self) -> [u8; EXEC_EVENT_SIZE] {
        let mut out = [0u8; EXEC_EVENT_SIZE];
        // SAFETY: ExecEvent is repr(C) without padding (size asserted), so all of its
        // EXEC_EVENT_SIZE bytes are initialised.
        let bytes = unsafe {
            core::slice::from_raw_parts(self as *const ExecEvent as *const u8, EXEC_EVENT_SIZE)
        };
        out.copy_from_slice(bytes);
        out
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
        assert_eq!(offset_of!(ExecEvent, start_ns), 8);
        assert_eq!(offset_of!(ExecEvent, cgroup_id), 16);
        assert_eq!(offset_of!(ExecEvent, tgid), 24);
        assert_eq!(offset_of!(ExecEvent, pid), 28);
        assert_eq!(offset_of!(ExecEvent, ppid), 32);
        assert_eq!(offset_of!(ExecEvent, uid), 36);
        assert_eq!(offset_of!(ExecEvent, gid), 40);
        assert_eq!(offset_of!(ExecEvent, flags), 44);
        assert_eq!(offset_of!(ExecEvent, filename_len), 48);
        assert_eq!(offset_of!(ExecEvent, pidns_level), 52);
        assert_eq!(offset_of!(ExecEvent, comm), 56);
        assert_eq!(offset_of!(ExecEvent, exe_name), 72);
        assert_eq!(offset_of!(ExecEvent, argv0_name), 88);
        assert_eq!(offset_of!(ExecEvent, filename), 104);
    }

    fn event(tgid: u32, comm: &[u8], filename: &[u8]) -> ExecEvent {
        let mut ev = ExecEvent {
            ktime_ns: 123,
            start_ns: 456,
            cgroup_id: 1,
            tgid,
            pid: tgid,
            ppid: 7,
            uid: 1000,
            gid: 1000,
            flags: 0,
            filename_len: filename.len() as u32,
            pidns_level: 0,
            comm: [0; COMM_LEN],
            exe_name: [0; COMM_LEN],
            argv0_name: [0; COMM_LEN],
            filename: [0; FILENAME_LEN],
        };
        ev.comm[..comm.len()].copy_from_slice(comm);
        ev.exe_name[..comm.len()].copy_from_slice(comm);
        ev.argv0_name[..2].copy_from_slice(b"sh");
        ev.filename[..filename.len()].copy_from_slice(filename);
        ev
    }

    /// The fuzz target's seed (fuzz/seeds/exec_event) is this record; FFRTMP_WRITE_FUZZ_SEEDS=1
    /// writes it again after the layout changed.
    #[test]
    fn the_fuzz_seed_is_an_ffmpeg_exec() {
        let seed = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../fuzz/seeds/exec_event/ffmpeg.bin");
        let ev = event(4242, b"ffmpeg", b"/usr/bin/ffmpeg");
        if std::env::var_os("FFRTMP_WRITE_FUZZ_SEEDS").is_some() {
            std::fs::write(&seed, ev.to_bytes()).unwrap();
        }
        let committed = std::fs::read(&seed).unwrap();
        let decoded = decode_exec_event(&committed).unwrap();
        assert_eq!((decoded.tgid, decoded.comm_bytes()), (4242, &b"ffmpeg"[..]));
        assert_eq!(decoded.filename_bytes(), b"/usr/bin/ffmpeg");
    }

    #[test]
    fn decodes_a_record() {
        let r = event(42, b"ffmpeg", b"/usr/bin/ffmpeg").to_bytes();
        let ev = decode_exec_event(&r).unwrap();
        assert_eq!((ev.tgid, ev.ppid, ev.start_ns), (42, 7, 456));
        assert_eq!(ev.uid, 1000);
        assert_eq!(ev.comm_bytes(), b"ffmpeg");
        assert_eq!(ev.exe_name_bytes(), b"ffmpeg");
        assert_eq!(ev.argv0_name_bytes(), b"sh");
        assert_eq!(ev.filename_bytes(), b"/usr/bin/ffmpeg");
    }

    #[test]
    fn rejects_wrong_lengths() {
        let r = event(1, b"x", b"/x").to_bytes();
        assert_eq!(
            decode_exec_event(&r[..EXEC_EVENT_SIZE - 1]).err(),
            Some(DecodeError::Length {
                got: EXEC_EVENT_SIZE - 1
            })
        );
        let mut long = r.to_vec();
        long.push(0);
        assert_eq!(
            decode_exec_event(&long).err(),
            Some(DecodeError::Length {
                got: EXEC_EVENT_SIZE + 1
            })
        );
        // A record of the previous layout (312 bytes) is refused, not misread.
        assert_eq!(
            decode_exec_event(&r[..312]).err(),
            Some(DecodeError::Length { got: 312 })
        );
        assert_eq!(
            decode_exec_event(&[]).err(),
            Some(DecodeError::Length { got: 0 })
        );
    }

    #[test]
    fn rejects_filename_len_past_the_buffer() {
        let mut r = event(1, b"x", b"/x").to_bytes();
        r[48..52].copy_from_slice(&(FILENAME_LEN as u32).to_ne_bytes());
        assert_eq!(
            decode_exec_event(&r).err(),
            Some(DecodeError::FilenameLength {
                len: FILENAME_LEN as u32
            })
        );
    }

    #[test]
    fn full_names_without_nul_are_kept_whole() {
        let r = event(1, b"abcdefghijklmnop", b"/x").to_bytes();
        let ev = decode_exec_event(&r).unwrap();
        assert_eq!(ev.comm_bytes(), b"abcdefghijklmnop");
        assert_eq!(ev.exe_name_bytes(), b"abcdefghijklmnop");
    }
}
