//! Starting the WinFsp volume: its parameters, the owner-only security
//! descriptor, the host, and the service loop.

use std::ffi::c_void;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use ::winfsp::host::{FileSystemHost, VolumeParams};
use ::winfsp::service::FileSystemServiceBuilder;
use ::winfsp::{FspError, Result as FspResult};
use anyhow::{anyhow, bail, Context};

use super::{filetime, WinFspAdapter, SECTOR_SIZE};
use crate::fs::SealFs;

pub(super) fn volume_params(read_only: bool) -> VolumeParams {
    let mut p = VolumeParams::new();
    p.filesystem_name("sealfs")
        .sector_size(SECTOR_SIZE)
        .sectors_per_allocation_unit(1)
        .max_component_length(255)
        .volume_creation_time(filetime(SystemTime::now()))
        .case_sensitive_search(true)
        .case_preserved_names(true)
        .unicode_on_disk(true)
        .persistent_acls(true)
        .reparse_points(false)
        .named_streams(false)
        .extended_attributes(false)
        .read_only_volume(read_only)
        // Nothing cached across callers or requests (see the module docs).
        .file_info_timeout(0);
    p
}

/// A self-relative security descriptor that gives the user this process
/// runs as full access, and no one else any (the counterpart of a FUSE mount
/// without `allow_other`).
#[expect(
    unsafe_code,
    reason = "building a security descriptor is a Win32 call on raw buffers"
)]
pub(super) fn owner_only_descriptor() -> anyhow::Result<Vec<u8>> {
    use windows::core::{HSTRING, PWSTR};
    use windows::Win32::Foundation::{LocalFree, HANDLE, HLOCAL};
    use windows::Win32::Security::Authorization::{
        ConvertSidToStringSidW, ConvertStringSecurityDescriptorToSecurityDescriptorW,
        SDDL_REVISION_1,
    };
    use windows::Win32::Security::{
        GetTokenInformation, TokenUser, PSECURITY_DESCRIPTOR, TOKEN_USER,
    };

    // GetCurrentProcessToken() (Windows 8+): a pseudo-handle, nothing to close.
    let token = HANDLE(-4_isize as *mut c_void);
    let mut len = 0u32;
    // SAFETY: a size query: no buffer, and `len` is a valid out pointer.
    let _ = unsafe { GetTokenInformation(token, TokenUser, None, 0, &mut len) };
    // u64s, so the buffer is aligned for TOKEN_USER.
    let mut buf = vec![0u64; (len as usize).div_ceil(8)];
    // SAFETY: `buf` is writable for `len` bytes and suitably aligned.
    unsafe {
        GetTokenInformation(
            token,
            TokenUser,
            Some(buf.as_mut_ptr().cast()),
            len,
            &mut len,
        )
    }
    .context("cannot read the process token's user")?;
    // SAFETY: the call succeeded, so `buf` starts with a TOKEN_USER whose SID
    // points into `buf`, which outlives every use of `sid` below.
    let sid = unsafe { buf.as_ptr().cast::<TOKEN_USER>().read() }.User.Sid;

    let mut sid_str = PWSTR::null();
    // SAFETY: `sid` is valid (above); on success `sid_str` is a LocalAlloc'd,
    // NUL-terminated string, read once and freed once.
    let user = unsafe {
        ConvertSidToStringSidW(sid, &mut sid_str).context("cannot format the user's SID")?;
        let s = sid_str.to_string();
        LocalFree(Some(HLOCAL(sid_str.0.cast())));
        s
    }
    .context("the user's SID is not UTF-16")?;

    // Owner and group: the user. Protected DACL: one ACE, full access for the user.
    let sddl = HSTRING::from(format!("O:{user}G:{user}D:P(A;;FA;;;{user})"));
    let mut sd = PSECURITY_DESCRIPTOR::default();
    let mut size = 0u32;
    // SAFETY: `sddl` is a valid NUL-terminated string and both out pointers
    // are valid; on success `sd` is a LocalAlloc'd self-relative descriptor of
    // `size` bytes, copied once and freed once.
    let descriptor = unsafe {
        ConvertStringSecurityDescriptorToSecurityDescriptorW(
            &sddl,
            SDDL_REVISION_1,
            &mut sd,
            Some(&mut size),
        )
        .context("cannot build the security descriptor")?;
        let bytes = std::slice::from_raw_parts(sd.0.cast::<u8>(), size as usize).to_vec();
        LocalFree(Some(HLOCAL(sd.0)));
        bytes
    };
    Ok(descriptor)
}

pub(super) fn start_host(
    fs: &Arc<SealFs>,
    security: &Arc<[u8]>,
    params: &VolumeParams,
    mountpoint: &Path,
) -> FspResult<FileSystemHost<WinFspAdapter>> {
    let adapter = WinFspAdapter::new(Arc::clone(fs), Arc::clone(security));
    let mut host: FileSystemHost<WinFspAdapter> = FileSystemHost::new(params.clone(), adapter)?;
    host.mount(mountpoint.as_os_str())?;
    host.start()?;
    Ok(host)
}

/// An NTSTATUS for messages (once the WinFsp DLL is loaded).
pub(super) fn status(e: &FspError) -> String {
    format!("NTSTATUS {:#010x}", e.to_ntstatus() as u32)
}

/// Mounts `fs` at `mountpoint` (a free drive letter such as `X:`, or a
/// directory path that does not exist yet) and serves it until Ctrl-C,
/// Ctrl-Break or the console closes; then unmounts.
pub fn run(fs: Arc<SealFs>, mountpoint: &Path) -> anyhow::Result<()> {
    let init = ::winfsp::winfsp_init()
        .map_err(|e| anyhow!("cannot load the WinFsp DLL (is WinFsp installed?): {e:?}"))?;
    let security: Arc<[u8]> = owner_only_descriptor()?.into();
    let params = volume_params(fs.options().read_only);
    // WinFsp's service loop ends normally even when the start callback fails.
    let mount_error = Arc::new(Mutex::new(None));
    let start_error = Arc::clone(&mount_error);
    let at = mountpoint.to_path_buf();
    let mut service = FileSystemServiceBuilder::new()
        .with_start(move || {
            let host = start_host(&fs, &security, &params, &at);
            match &host {
                Ok(_) => tracing::info!(mountpoint = %at.display(), "mounted"),
                Err(e) => *start_error.lock().unwrap_or_else(|e| e.into_inner()) = Some(status(e)),
            }
            host.map(Some)
        })
        // Dropping the host unmounts it and stops its dispatcher.
        .with_stop(|host| {
            drop(host.and_then(Option::take));
            Ok(())
        })
        .build("sealfs-mountd", init)
        .map_err(|e| anyhow!("cannot create the WinFsp service: {}", status(&e)))?;
    service
        .start()
        .map_err(|e| anyhow!("cannot start the WinFsp service: {}", status(&e)))?;
    service
        .join()
        .map_err(|e| anyhow!("the WinFsp service failed: {}", status(&e)))?;
    if let Some(e) = mount_error.lock().unwrap_or_else(|e| e.into_inner()).take() {
        bail!("cannot mount on {}: {e}", mountpoint.display());
    }
    tracing::info!("unmounted");
    Ok(())
}
