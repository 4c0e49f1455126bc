/*
 * Test-only stand-in for `sc.exe control <service> paramchange`, which the
 * Windows suite (scripts/windows-tests.sh) needs and wine 8.0's sc.exe lacks
 * (it knows create, description, failure, delete, start, stop, query and
 * sdset, not control). Wine's Service Control Manager itself implements
 * ControlService with SERVICE_CONTROL_PARAMCHANGE as Windows does: it needs
 * SERVICE_PAUSE_CONTINUE access, and refuses the control with
 * ERROR_INVALID_SERVICE_CONTROL (1052) unless the service's status accepts
 * SERVICE_ACCEPT_PARAMCHANGE. This program makes the same call sc.exe makes.
 * Nothing here ships.
 *
 *   sc-control.exe <service> paramchange
 *
 * Prints "control ok: <state>" and exits 0, or "control failed: error <n>"
 * and exits 1.
 */
#include <windows.h>
#include <stdio.h>
#include <string.h>

int main(int argc, char **argv)
{
    SC_HANDLE manager, service;
    SERVICE_STATUS status;
    DWORD error = 0;

    if (argc != 3 || strcmp(argv[2], "paramchange") != 0)
    {
        fprintf(stderr, "usage: sc-control.exe <service> paramchange\n");
        return 2;
    }
    manager = OpenSCManagerA(NULL, NULL, SC_MANAGER_CONNECT);
    if (!manager)
    {
        printf("control failed: error %lu (OpenSCManager)\n", GetLastError());
        return 1;
    }
    service = OpenServiceA(manager, argv[1], SERVICE_PAUSE_CONTINUE | SERVICE_QUERY_STATUS);
    if (!service)
    {
        printf("control failed: error %lu (OpenService)\n", GetLastError());
        CloseServiceHandle(manager);
        return 1;
    }
    memset(&status, 0, sizeof status);
    if (!ControlService(service, SERVICE_CONTROL_PARAMCHANGE, &status))
        error = GetLastError();
    CloseServiceHandle(service);
    CloseServiceHandle(manager);
    if (error)
    {
        printf("control failed: error %lu\n", error);
        return 1;
    }
    printf("control ok: state %lu\n", status.dwCurrentState);
    return 0;
}
