# Install the inspection service (and optionally the camera ingest) as Windows services with NSSM.
# Run in an elevated PowerShell after the native install (docs/deployment.md "Windows"):
#   .\install-nssm.ps1 -Root C:\defect-inspect [-Cameras C:\defect-inspect\cameras.yaml]
param(
    [string]$Root = "C:\defect-inspect",
    [string]$Nssm = "nssm.exe",
    [int]$Port = 8000,
    [string]$DatabaseUrl = "",
    [string]$Cameras = ""
)
$ErrorActionPreference = "Stop"

$exe = Join-Path $Root "venv\Scripts\defect-inspect.exe"
if (-not (Test-Path $exe)) { throw "$exe not found: install the service into $Root\venv first" }
$data = Join-Path $Root "data"
$logs = Join-Path $Root "logs"
New-Item -ItemType Directory -Force -Path $data, $logs | Out-Null
if (-not $DatabaseUrl) { $DatabaseUrl = "sqlite:///" + ($data -replace '\\', '/') + "/inspect.db" }

$envBlock = @(
    "INSPECT_PROVIDERS=DmlExecutionProvider,CPUExecutionProvider",
    "INSPECT_DATA_DIR=$data",
    "INSPECT_DATABASE_URL=$DatabaseUrl",
    "INSPECT_METRICS_PUBLIC=true",
    "PYTHONUNBUFFERED=1"
)

# Migrations once, now (the service itself does not migrate on start under NSSM).
$env:INSPECT_DATABASE_URL = $DatabaseUrl
& $exe db upgrade
if ($LASTEXITCODE -ne 0) { throw "defect-inspect db upgrade failed ($LASTEXITCODE)" }

function Install-InspectService([string]$Name, [string]$Arguments, [string[]]$Extra) {
    & $Nssm stop $Name 2>$null | Out-Null
    & $Nssm remove $Name confirm 2>$null | Out-Null
    & $Nssm install $Name $exe $Arguments
    & $Nssm set $Name AppDirectory $Root
    & $Nssm set $Name AppEnvironmentExtra ($envBlock + $Extra)
    & $Nssm set $Name AppStdout (Join-Path $logs "$Name.out.log")
    & $Nssm set $Name AppStderr (Join-Path $logs "$Name.err.log")
    & $Nssm set $Name AppRotateFiles 1
    & $Nssm set $Name AppRotateBytes 10485760
    & $Nssm set $Name AppExit Default Restart
    & $Nssm set $Name AppRestartDelay 10000
    & $Nssm set $Name Start SERVICE_DELAYED_AUTO_START
    & $Nssm start $Name
}

Install-InspectService "defect-inspect" "serve --host 0.0.0.0 --port $Port" @()
if ($Cameras) {
    Install-InspectService "defect-inspect-ingest" "ingest --host 127.0.0.1 --port $($Port + 1)" @("INSPECT_CAMERAS_FILE=$Cameras")
}
Write-Host "Service running: http://localhost:$Port/readyz"
