/*
 * Test-only stand-ins for what wine 8.0 lacks and Windows has, loaded by the
 * Windows suite (scripts/windows-tests.sh) next to the cross-built .exe files.
 * Nothing here ships: the product runs on Windows' own DLLs.
 *
 * 1. bcryptprimitives.dll!ProcessPrng: Rust's std takes its random bytes
 *    from it (Windows 10+); wine 8.0 has no bcryptprimitives.dll. Forwarded
 *    to BCryptGenRandom, which wine has.
 *
 * 2. crypt32!CertCreateCertificateChainEngine: rustls-platform-verifier
 *    passes the Windows 8+ CERT_CHAIN_ENGINE_CONFIG (88 bytes, with
 *    dwExclusiveFlags) when extra CA roots are configured (the emulator's
 *    test CA); wine 8.0 only accepts the older sizes and fails with
 *    E_INVALIDARG. The wrapper retries with the older sizes, keeping every
 *    field wine knows (hExclusiveRoot included).
 *
 * 3. crypt32!CertVerifyCertificateChainPolicy: the verifier asks Windows to
 *    ignore "revocation status unknown" (CERT_CHAIN_POLICY_IGNORE_ALL_REV_
 *    UNKNOWN_FLAGS; the test CA's certificates name no CRL or OCSP server);
 *    wine 8.0 ignores that flag and reports CERT_E_REVOCATION_FAILURE. The
 *    wrapper applies the flags the caller passed, as Windows does: only
 *    "unknown/offline" revocation errors are cleared, never a revocation.
 *
 * While this DLL loads (before the program's code runs) it points the
 * program's imports of 2 and 3 at the wrappers.
 */
#include <windows.h>
#include <bcrypt.h>
#include <wincrypt.h>
#include <string.h>

BOOL WINAPI ProcessPrng(PBYTE data, SIZE_T len)
{
    while (len) {
        ULONG chunk = len > 0x40000000 ? 0x40000000 : (ULONG)len;
        if (BCryptGenRandom(NULL, data, chunk, BCRYPT_USE_SYSTEM_PREFERRED_RNG) != 0)
            return FALSE;
        data += chunk;
        len -= chunk;
    }
    return TRUE;
}

typedef BOOL (WINAPI *create_engine_fn)(void *config, void **engine);
static create_engine_fn real_create_engine;

static BOOL WINAPI create_engine_sized(void *config, void **engine)
{
    static const DWORD sizes[] = { 80, 72, 64 };
    DWORD given = *(DWORD *)config;
    BYTE copy[128];
    size_t i;

    if (real_create_engine(config, engine))
        return TRUE;
    if (given > sizeof(copy))
        return FALSE;
    for (i = 0; i < sizeof(sizes) / sizeof(sizes[0]); i++) {
        if (sizes[i] >= given)
            continue;
        memcpy(copy, config, given);
        *(DWORD *)copy = sizes[i];
        if (real_create_engine(copy, engine))
            return TRUE;
    }
    return FALSE;
}

typedef BOOL (WINAPI *verify_policy_fn)(LPCSTR oid, PCCERT_CHAIN_CONTEXT chain,
                                        PCERT_CHAIN_POLICY_PARA para,
                                        PCERT_CHAIN_POLICY_STATUS status);
static verify_policy_fn real_verify_policy;

static BOOL WINAPI verify_policy_honouring_flags(LPCSTR oid, PCCERT_CHAIN_CONTEXT chain,
                                                 PCERT_CHAIN_POLICY_PARA para,
                                                 PCERT_CHAIN_POLICY_STATUS status)
{
    BOOL ok = real_verify_policy(oid, chain, para, status);
    if (ok && para && status
        && (para->dwFlags & CERT_CHAIN_POLICY_IGNORE_ALL_REV_UNKNOWN_FLAGS)
               == CERT_CHAIN_POLICY_IGNORE_ALL_REV_UNKNOWN_FLAGS
        && ((DWORD)status->dwError == (DWORD)CERT_E_REVOCATION_FAILURE
            || (DWORD)status->dwError == (DWORD)CRYPT_E_NO_REVOCATION_CHECK
            || (DWORD)status->dwError == (DWORD)CRYPT_E_REVOCATION_OFFLINE)) {
        status->dwError = 0;
        status->lChainIndex = -1;
        status->lElementIndex = -1;
    }
    return ok;
}

static void patch_program_imports(void)
{
    BYTE *base = (BYTE *)GetModuleHandleW(NULL);
    IMAGE_DOS_HEADER *dos = (IMAGE_DOS_HEADER *)base;
    IMAGE_NT_HEADERS *nt = (IMAGE_NT_HEADERS *)(base + dos->e_lfanew);
    IMAGE_DATA_DIRECTORY dir = nt->OptionalHeader.DataDirectory[IMAGE_DIRECTORY_ENTRY_IMPORT];
    IMAGE_IMPORT_DESCRIPTOR *imp;

    if (!dir.VirtualAddress)
        return;
    for (imp = (IMAGE_IMPORT_DESCRIPTOR *)(base + dir.VirtualAddress); imp->Name; imp++) {
        IMAGE_THUNK_DATA *names, *slots;
        if (lstrcmpiA((const char *)(base + imp->Name), "crypt32.dll") || !imp->OriginalFirstThunk)
            continue;
        names = (IMAGE_THUNK_DATA *)(base + imp->OriginalFirstThunk);
        slots = (IMAGE_THUNK_DATA *)(base + imp->FirstThunk);
        for (; names->u1.AddressOfData; names++, slots++) {
            IMAGE_IMPORT_BY_NAME *by_name;
            DWORD old;
            if (IMAGE_SNAP_BY_ORDINAL(names->u1.Ordinal))
                continue;
            by_name = (IMAGE_IMPORT_BY_NAME *)(base + names->u1.AddressOfData);
            ULONG_PTR wrapper;
            if (!strcmp((const char *)by_name->Name, "CertCreateCertificateChainEngine")) {
                real_create_engine = (create_engine_fn)slots->u1.Function;
                wrapper = (ULONG_PTR)create_engine_sized;
            } else if (!strcmp((const char *)by_name->Name, "CertVerifyCertificateChainPolicy")) {
                real_verify_policy = (verify_policy_fn)slots->u1.Function;
                wrapper = (ULONG_PTR)verify_policy_honouring_flags;
            } else {
                continue;
            }
            if (VirtualProtect(&slots->u1.Function, sizeof(void *), PAGE_READWRITE, &old)) {
                slots->u1.Function = wrapper;
                VirtualProtect(&slots->u1.Function, sizeof(void *), old, &old);
            }
        }
    }
}

BOOL WINAPI DllMain(HINSTANCE instance, DWORD reason, LPVOID reserved)
{
    (void)instance;
    (void)reserved;
    if (reason == DLL_PROCESS_ATTACH)
        patch_program_imports();
    return TRUE;
}
