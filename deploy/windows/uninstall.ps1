<#
.SYNOPSIS
  Stops (draining calls) and removes the identity-gateway service and its
  program files. %ProgramData%\identity-gateway (config, logs) is kept unless
  -RemoveData is given. Run from an elevated PowerShell.
#>
[CmdletBinding()]
param(
    [string]$InstallDir = (Join-Path $env:ProgramFiles 'identity-gateway'),
    [switch]$RemoveData
)
$ErrorActionPreference = 'Stop'
$exe = Join-Path $InstallDir 'identity-gateway.exe'
if (Get-Service -Name identity-gateway -ErrorAction SilentlyContinue) {
    & $exe service uninstall
    if ($LASTEXITCODE -ne 0) { throw "identity-gateway service uninstall failed ($LASTEXITCODE)" }
}
Remove-Item -Recurse -Force $InstallDir -ErrorAction SilentlyContinue
if ($RemoveData) {
    Remove-Item -Recurse -Force (Join-Path $env:ProgramData 'identity-gateway')
}
