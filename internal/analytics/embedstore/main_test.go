package embedstore

import (
	"testing"

	"go.uber.org/goleak"
)

// TestMain checks that a closed Store leaves no goroutine behind (Pebble's
// included).
func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}
