package kafkalog_test

import (
	"testing"

	"go.uber.org/goleak"
)

// TestMain checks that a closed Log (and a closed kfake cluster) leaves no
// goroutine behind.
func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}
