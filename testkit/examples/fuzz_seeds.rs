//! Writes the fuzz targets' seeds (`syncline_testkit::fuzz::seeds`) under the directory given
//! as the only argument, one subdirectory per target; `cargo xtask fuzz` runs it.

fn main() -> std::io::Result<()> {
    let dir = std::env::args_os()
        .nth(1)
        .map(std::path::PathBuf::from)
        .ok_or_else(|| std::io::Error::other("usage: fuzz_seeds DIR"))?;
    for (i, (target, bytes)) in syncline_testkit::fuzz::seeds().into_iter().enumerate() {
        let target_dir = dir.join(target);
        std::fs::create_dir_all(&target_dir)?;
        std::fs::write(target_dir.join(format!("seed-{i}")), bytes)?;
    }
    Ok(())
}
