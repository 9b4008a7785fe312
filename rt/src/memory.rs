//! Giving freed memory back to the system.
//!
//! glibc's allocator keeps what a burst of connections freed (tens to hundreds of MB after
//! a load test, measured on the gateway) inside its heaps until told otherwise; musl's
//! returns it by itself. A node that handled a spike should shrink back to its idle size,
//! so on glibc builds this asks for it periodically. Elsewhere it does nothing.

use std::time::Duration;

/// How often freed memory is handed back.
pub const RELEASE_INTERVAL: Duration = Duration::from_secs(10);

/// Hand freed heap pages back to the system now.
pub fn release_unused() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim only walks the allocator's own free lists under its own locks;
    // it takes no pointers from us and is safe to call from any thread at any time.
    #[allow(unsafe_code)]
    unsafe {
        libc::malloc_trim(0);
    }
}

/// Call [`release_unused`] every [`RELEASE_INTERVAL`], forever.
pub async fn release_periodically() {
    loop {
        async_io::Timer::after(RELEASE_INTERVAL).await;
        release_unused();
    }
}
