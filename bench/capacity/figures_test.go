package capacity

import (
	"testing"

	"github.com/pedal-project/pedal/internal/estimate"
)

// TestFiguresFile: the checked-in figures are complete and name their machine.
func TestFiguresFile(t *testing.T) {
	f, err := estimate.Parse(Figures())
	if err != nil {
		t.Fatal(err)
	}
	if f.Machine.Cores < 1 || f.Machine.Commit == "" || f.Machine.Go == "" {
		t.Errorf("machine %+v: cores, commit or Go version missing", f.Machine)
	}
}
