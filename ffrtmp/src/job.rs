//! A job's id: `auto-<command>-<pid>`, the predecessor's naming, which is also the name of
//! the job's cgroup under the root. `JobId` is the one place that builds one, reads one
//! back from a cgroup's name, and says how long a command name may be for the id to stay a
//! valid directory name.

use std::fmt;

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct JobId(String);

impl JobId {
    const PREFIX: &'static str = "auto-";

    /// The longest command name: `auto-<name>-<pid>-<start time>` (a job cgroup whose name
    /// is taken gets the start time appended) must stay a valid directory name (255 bytes),
    /// with 10 digits of PID and 20 of start time.
    pub const MAX_COMMAND_NAME: usize = 255 - Self::PREFIX.len() - 1 - 10 - 1 - 20;

    /// The id of a discovered process.
    pub fn new(command: &str, pid: u32) -> JobId {
        JobId(format!("{}{command}-{pid}", Self::PREFIX))
    }

    /// A job id given on the command line (`ffrtmp run --job-id`, `attach`), or their
    /// default: it becomes a directory name, so it must be a plain name.
    pub fn named(id: &str) -> Result<JobId, String> {
        if id.is_empty() || id == "." || id == ".." || id.contains('/') || id.contains('\0') {
            return Err(format!(
                "job id {id:?} must be a plain name (no '/', not . or ..)"
            ));
        }
        Ok(JobId(id.to_string()))
    }

    /// The id in a cgroup name (the last component of a path), if it is one: the command and
    /// the PID it names.
    pub fn parse(name: &str) -> Option<(JobId, &str, u32)> {
        let name = name.rsplit('/').next()?;
        let (prefix, pid) = name.rsplit_once('-')?;
        let command = prefix.strip_prefix(Self::PREFIX)?;
        let pid: u32 = pid.parse().ok()?;
        (!command.is_empty()).then(|| (JobId(name.to_string()), command, pid))
    }

    /// Whether a cgroup name is a job's (`auto-…`): a leftover the scan may remove.
    pub fn names_a_job(name: &str) -> bool {
        name.starts_with(Self::PREFIX)
    }

    /// The id when the cgroup of that name is still in use: the start time appended.
    pub fn with_start_time(&self, start_time: u64) -> String {
        format!("{}-{start_time}", self.0)
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for JobId {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn built_and_read_back() {
        let id = JobId::new("gst-launch-1.0", 42);
        assert_eq!(id.as_str(), "auto-gst-launch-1.0-42");
        let (back, command, pid) = JobId::parse("/ffrtmp/auto-gst-launch-1.0-42").unwrap();
        assert_eq!((back, command, pid), (id.clone(), "gst-launch-1.0", 42));
        assert_eq!(id.with_start_time(7), "auto-gst-launch-1.0-42-7");
        assert!(JobId::names_a_job("auto-x-1"));
        assert_eq!(JobId::named("run-7").unwrap().as_str(), "run-7");
        for bad in ["", ".", "..", "a/b", "a\0b"] {
            assert!(JobId::named(bad).is_err(), "{bad:?}");
        }
        for not in [
            "spare-1",
            "auto--1",
            "auto-ffmpeg",
            "auto-ffmpeg-x",
            "manual-ffmpeg-1",
        ] {
            assert!(JobId::parse(not).is_none(), "{not}");
        }
    }

    #[test]
    fn the_longest_command_name_still_makes_a_directory_name() {
        let name = "n".repeat(JobId::MAX_COMMAND_NAME);
        let id = JobId::new(&name, u32::MAX).with_start_time(u64::MAX);
        assert!(id.len() <= 255, "{}", id.len());
    }
}
