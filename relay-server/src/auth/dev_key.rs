//! The development HS256 secret: created in the data directory on first start when no key is
//! configured, so that `syncline-relay serve` works with nothing set up. Anyone who can read
//! the file can mint tokens; it is for development only, and the relay says so loudly.

use std::io::Write;
use std::path::{Path, PathBuf};

/// The file name of the development secret inside the data directory.
pub const FILE_NAME: &str = "dev-hs256.key";

/// Bytes in a development secret.
const SECRET_LEN: usize = 32;

/// Reads the development secret of `data_dir`, creating it (readable by the owner only) if
/// it does not exist. Returns the secret and whether it was just created.
///
/// # Errors
/// The I/O error, or `InvalidData` for a file shorter than 32 bytes.
pub fn load_or_create(data_dir: &Path) -> std::io::Result<(Vec<u8>, bool)> {
    let path = path(data_dir);
    match std::fs::read(&path) {
        Ok(secret) if secret.len() >= SECRET_LEN => return Ok((secret, false)),
        Ok(_) => {
            return Err(std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                format!("{} is shorter than {SECRET_LEN} bytes", path.display()),
            ));
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(e),
    }
    std::fs::create_dir_all(data_dir)?;
    let mut secret = vec![0u8; SECRET_LEN];
    getrandom::fill(&mut secret).map_err(std::io::Error::other)?;
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let mut file = options.open(&path)?;
    file.write_all(&secret)?;
    file.sync_all()?;
    Ok((secret, true))
}

/// Where the development secret of `data_dir` lives.
pub fn path(data_dir: &Path) -> PathBuf {
    data_dir.join(FILE_NAME)
}
