//! The Windows Event Log (Application log, source `identity-gateway`) for
//! what an operator must see without opening the log files: start, stop and
//! fatal errors. Everything else goes to the rotating log files.
//!
//! `service install` registers the source with `EventCreate.exe`'s message
//! table (ids 1-1000 print their text as given), the way `eventcreate.exe`
//! registers its own sources; `service uninstall` removes it.

use std::ptr;

use windows_sys::Win32::{
    Foundation::ERROR_SUCCESS,
    System::{
        EventLog::{
            DeregisterEventSource, RegisterEventSourceW, ReportEventW, EVENTLOG_ERROR_TYPE,
            EVENTLOG_INFORMATION_TYPE, EVENTLOG_WARNING_TYPE, REPORT_EVENT_TYPE,
        },
        Registry::{
            RegCloseKey, RegCreateKeyExW, RegDeleteKeyW, RegSetValueExW, HKEY, HKEY_LOCAL_MACHINE,
            KEY_SET_VALUE, REG_DWORD, REG_EXPAND_SZ, REG_OPTION_NON_VOLATILE,
        },
    },
};

use super::{wide, SERVICE_NAME};

const SOURCE_KEY: &str = r"SYSTEM\CurrentControlSet\Services\EventLog\Application\identity-gateway";

/// What an event reports; the id is stable for filtering in Event Viewer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Event {
    /// 1: the service started serving.
    Started,
    /// 2: the service stopped after draining.
    Stopped,
    /// 3: a warning worth an operator's attention.
    Warning,
    /// 4: the service could not start or failed.
    Fatal,
}

impl Event {
    fn id_and_type(self) -> (u32, REPORT_EVENT_TYPE) {
        match self {
            Event::Started => (1, EVENTLOG_INFORMATION_TYPE),
            Event::Stopped => (2, EVENTLOG_INFORMATION_TYPE),
            Event::Warning => (3, EVENTLOG_WARNING_TYPE),
            Event::Fatal => (4, EVENTLOG_ERROR_TYPE),
        }
    }
}

/// Writes one event; failures are ignored (the log files still have it).
pub fn report(event: Event, message: &str) {
    let source = wide(SERVICE_NAME);
    // SAFETY: NUL-terminated source name; the handle is closed below.
    let handle = unsafe { RegisterEventSourceW(ptr::null(), source.as_ptr()) };
    if handle.is_null() {
        return;
    }
    let text = wide(message);
    let strings = [text.as_ptr()];
    let (id, kind) = event.id_and_type();
    // SAFETY: one NUL-terminated insertion string, no binary data.
    unsafe {
        ReportEventW(
            handle,
            kind,
            0,
            id,
            ptr::null_mut(),
            1,
            0,
            strings.as_ptr(),
            ptr::null(),
        );
        DeregisterEventSource(handle);
    }
}

/// Registers the event source (needs Administrator rights).
pub fn register_source() -> Result<(), String> {
    let key_name = wide(SOURCE_KEY);
    let mut key: HKEY = ptr::null_mut();
    // SAFETY: NUL-terminated key name; the key is closed below.
    let rc = unsafe {
        RegCreateKeyExW(
            HKEY_LOCAL_MACHINE,
            key_name.as_ptr(),
            0,
            ptr::null(),
            REG_OPTION_NON_VOLATILE,
            KEY_SET_VALUE,
            ptr::null(),
            &mut key,
            ptr::null_mut(),
        )
    };
    if rc != ERROR_SUCCESS {
        return Err(format!(
            "cannot register the Event Log source: {}",
            std::io::Error::from_raw_os_error(rc as i32)
        ));
    }
    let file = wide(r"%SystemRoot%\System32\EventCreate.exe");
    let types: u32 = 7; // error, warning, information
    let name_file = wide("EventMessageFile");
    let name_types = wide("TypesSupported");
    // SAFETY: value buffers and their byte lengths match; `key` is open.
    let rc = unsafe {
        let a = RegSetValueExW(
            key,
            name_file.as_ptr(),
            0,
            REG_EXPAND_SZ,
            file.as_ptr() as *const u8,
            (file.len() * 2) as u32,
        );
        let b = RegSetValueExW(
            key,
            name_types.as_ptr(),
            0,
            REG_DWORD,
            &types as *const u32 as *const u8,
            4,
        );
        RegCloseKey(key);
        if a != ERROR_SUCCESS {
            a
        } else {
            b
        }
    };
    if rc != ERROR_SUCCESS {
        return Err(format!(
            "cannot register the Event Log source: {}",
            std::io::Error::from_raw_os_error(rc as i32)
        ));
    }
    Ok(())
}

/// Removes the event source registration (missing is fine).
pub fn unregister_source() {
    let key_name = wide(SOURCE_KEY);
    // SAFETY: NUL-terminated key name.
    unsafe { RegDeleteKeyW(HKEY_LOCAL_MACHINE, key_name.as_ptr()) };
}
