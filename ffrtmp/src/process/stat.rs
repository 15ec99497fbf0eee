//! `/proc/PID/stat`, parsed without trusting the comm: it may hold spaces, parentheses,
//! newlines and bytes that are not UTF-8, so the fields are found after the *last* `)`.

/// `PF_EXITING` in the stat flags: the process is in `do_exit`.
pub const PF_EXITING: u64 = 0x0000_0004;
/// `PF_KTHREAD` in the stat flags: a kernel thread.
pub const PF_KTHREAD: u64 = 0x0020_0000;

/// The fields of `/proc/PID/stat` ffrtmp uses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stat {
    pub pid: u32,
    /// Raw comm bytes (at most 15, kernel-truncated).
    pub comm: Vec<u8>,
    /// `R`, `S`, `D`, `Z`, `T`, …
    pub state: u8,
    pub ppid: u32,
    pub flags: u64,
    /// User and system time, clock ticks.
    pub utime: u64,
    pub stime: u64,
    /// Start time after boot, clock ticks: with the pid, the process's identity.
    pub start_time: u64,
}

impl Stat {
    pub fn is_kernel_thread(&self) -> bool {
        self.flags & PF_KTHREAD != 0
    }
    pub fn is_zombie(&self) -> bool {
        self.state == b'Z' || self.state == b'X'
    }
}

/// Parse one stat line. `None` if it is not a stat line.
pub fn parse_stat(buf: &[u8]) -> Option<Stat> {
    let open = buf.iter().position(|&b| b == b'(')?;
    let close = buf.iter().rposition(|&b| b == b')')?;
    if close < open {
        return None;
    }
    let pid = parse_u64(buf[..open].trim_ascii())? as u32;
    let comm = buf[open + 1..close].to_vec();
    let mut fields = buf
        .get(close + 1..)?
        .split(|&b| b == b' ')
        .filter(|f| !f.is_empty());
    // Field 3 (state) is the first after the comm; we need 3, 4, 9, 14, 15, 22.
    let state = *fields.next()?.first()?;
    let ppid = parse_u64(fields.next()?)? as u32;
    let mut fields = fields.skip(4); // pgrp session tty_nr tpgid
    let flags = parse_u64(fields.next()?)?;
    let mut fields = fields.skip(4); // minflt cminflt majflt cmajflt
    let utime = parse_u64(fields.next()?)?;
    let stime = parse_u64(fields.next()?)?;
    let mut fields = fields.skip(6); // cutime cstime priority nice num_threads itrealvalue
    let start_time = parse_u64(fields.next()?.trim_ascii_end())?;
    Some(Stat {
        pid,
        comm,
        state,
        ppid,
        flags,
        utime,
        stime,
        start_time,
    })
}

fn parse_u64(b: &[u8]) -> Option<u64> {
    if b.is_empty() || b.len() > 20 {
        return None;
    }
    let mut v: u64 = 0;
    for &c in b {
        if !c.is_ascii_digit() {
            return None;
        }
        v = v.checked_mul(10)?.checked_add(u64::from(c - b'0'))?;
    }
    Some(v)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn line(comm: &[u8]) -> Vec<u8> {
        let mut v = b"4242 (".to_vec();
        v.extend_from_slice(comm);
        v.extend_from_slice(b") S 17 4242 4242 0 -1 4194560 100 0 0 0 7 3 0 0 20 0 1 0 987654 1000 200 18446744073709551615 1 1 0 0 0 0 0 0 0 0 0 0 17 1 0 0 0 0 0\n");
        v
    }

    #[test]
    fn hostile_comms() {
        let comms: [&[u8]; 7] = [
            b"ffmpeg",
            b"a b c",
            b"x) S 1 2 (y",
            b"((()",
            b"new\nline",
            b"\xff\xfe\xfdbin",
            b"",
        ];
        for comm in comms {
            let s = parse_stat(&line(comm)).unwrap_or_else(|| panic!("{comm:?}"));
            assert_eq!(s.pid, 4242);
            assert_eq!(s.comm, comm);
            assert_eq!(s.state, b'S');
            assert_eq!(s.ppid, 17);
            assert_eq!(s.flags, 4194560);
            assert_eq!((s.utime, s.stime), (7, 3));
            assert_eq!(s.start_time, 987654);
        }
    }

    #[test]
    fn kernel_thread_flag() {
        let mut l = line(b"kworker/0:1");
        let s = String::from_utf8(l.clone())
            .unwrap()
            .replace(" 4194560 ", &format!(" {} ", PF_KTHREAD | 0x40));
        l = s.into_bytes();
        assert!(parse_stat(&l).unwrap().is_kernel_thread());
        assert!(!parse_stat(&line(b"sh")).unwrap().is_kernel_thread());
    }

    #[test]
    fn garbage_is_none() {
        for bad in [
            &b""[..],
            b"12",
            b"12 (x",
            b"x (y) S",
            b"12 (y) S notanumber",
            b"12 (y) S 1 2 3",
        ] {
            assert_eq!(parse_stat(bad), None, "{:?}", String::from_utf8_lossy(bad));
        }
    }
}
