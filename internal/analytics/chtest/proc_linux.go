package chtest

import (
	"os"
	"syscall"
)

var terminate os.Signal = syscall.SIGTERM

// sysProcAttr makes the server die with the test binary, so a killed test run
// leaves no server behind.
func sysProcAttr() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
}
