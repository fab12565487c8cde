package chstore_test

import (
	"testing"

	"go.uber.org/goleak"

	"github.com/pedal-project/pedal/internal/analytics/chtest"
)

// TestMain stops the shared ClickHouse server after the tests and checks that
// closed Stores leave no goroutine behind.
func TestMain(m *testing.M) { goleak.VerifyTestMain(chtest.Main(m)) }
