//! `cargo xtask build-ebpf`: to be written.

pub fn build(_args: &[String]) -> anyhow::Result<()> {
    anyhow::bail!("not written yet")
}
