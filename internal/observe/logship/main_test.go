package logship

import (
	"testing"

	"go.uber.org/goleak"
)

// TestMain fails the package's tests if a goroutine outlives them: every
// shipper's writer and sender must stop in Close.
func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}
