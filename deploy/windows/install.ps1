<#
.SYNOPSIS
  Installs identity-gateway as a Windows service from the unzipped package.

.DESCRIPTION
  Copies identity-gateway.exe to -InstallDir, puts config.toml in
  %ProgramData%\identity-gateway (kept if already there), registers the
  service with `identity-gateway.exe service install --config ...` (automatic
  start, LocalSystem, restart on failure, Event Log source, restrictive ACL on
  %ProgramData%\identity-gateway) and starts it. Run from an elevated
  PowerShell in the unzipped folder:

    powershell -ExecutionPolicy Bypass -File .\install.ps1
#>
[CmdletBinding()]
param(
    [string]$InstallDir = (Join-Path $env:ProgramFiles 'identity-gateway'),
    [string]$Config = '',
    [switch]$NoStart
)
$ErrorActionPreference = 'Stop'

$principal = [Security.Principal.WindowsPrincipal][Security.Principal.WindowsIdentity]::GetCurrent()
if (-not $principal.IsInRole([Security.Principal.WindowsBuiltInRole]::Administrator)) {
    throw 'Run install.ps1 from an elevated (Administrator) PowerShell.'
}

$here = Split-Path -Parent $MyInvocation.MyCommand.Path
$dataDir = Join-Path $env:ProgramData 'identity-gateway'
$exe = Join-Path $InstallDir 'identity-gateway.exe'

if (Get-Service -Name identity-gateway -ErrorAction SilentlyContinue) {
    Write-Host 'Removing the installed identity-gateway service first (it drains its calls).'
    & $exe service uninstall
    if ($LASTEXITCODE -ne 0) { throw "identity-gateway service uninstall failed ($LASTEXITCODE)" }
}

New-Item -ItemType Directory -Force -Path $InstallDir | Out-Null
Copy-Item -Force (Join-Path $here 'identity-gateway.exe') $exe
New-Item -ItemType Directory -Force -Path $dataDir | Out-Null

if ($Config -eq '') {
    $Config = Join-Path $dataDir 'config.toml'
    if (-not (Test-Path $Config)) {
        Copy-Item (Join-Path $here 'config.toml') $Config
        Write-Host "Wrote $Config (edit it, then Restart-Service identity-gateway; after a [policy] edit, sc.exe control identity-gateway paramchange is enough)."
    } else {
        Write-Host "Keeping the existing $Config."
    }
}

# The binary checks the config now (a config that cannot load fails here, not
# at the next boot), creates the service and locks down $dataDir.
& $exe service install --config $Config
if ($LASTEXITCODE -ne 0) { throw "identity-gateway service install failed ($LASTEXITCODE)" }

if (-not $NoStart) {
    Start-Service identity-gateway
    Get-Service identity-gateway | Format-Table -AutoSize Name, Status, StartType
}
