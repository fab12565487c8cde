package loadgen

import (
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"
)

func TestSummarizeLedger(t *testing.T) {
	const m0 = 1_772_366_400_000 // 2026-03-01T12:00:00Z, a minute start
	const m1 = m0 + minuteMs
	tests := []struct {
		name   string
		ledger string
		want   LedgerSummary
	}{
		{
			name:   "empty",
			ledger: "",
			want:   LedgerSummary{},
		},
		{
			name: "mixed",
			ledger: lines(
				"lg-r-1\tad-000001\tUS\t1772366400100\tunique",
				"lg-r-2\tad-000001\tUS\t1772366459999\tunique",
				"lg-r-3\tad-000001\tUS\t1772366460000\tunique",    // next minute
				"lg-r-4\tad-000002\tDE\t1772366400500\tduplicate", // before its original
				"lg-r-4\tad-000002\tDE\t1772366400500\tunique",
				"lg-r-1\tad-000001\tUS\t1772366400100\tduplicate",
				"lg-r-1\tad-000001\tUS\t1772366400100\tduplicate",
				"lg-r-5\tad-000002\tFR\t1772366401000\tduplicate", // original never acknowledged
				"lg-r-1\tad-000009\tUS\t1772366400100\tunique",    // same click id, other ad: distinct
				"lg-r-6\tad-000001\tUS\t1772366400200\tbot",
				"lg-r-7\tad-000001\tGB\t1772366400300\tbot",
				"lg-r-8\tad-000003\tJP\t1772362800000\tlate", // an hour earlier
			),
			want: LedgerSummary{
				Lines:          12,
				LinesByKind:    map[Kind]int64{KindUnique: 5, KindDuplicate: 4, KindBot: 2, KindLate: 1},
				Distinct:       9,
				DuplicateLines: 3,
				DistinctByKind: map[Kind]int64{KindUnique: 6, KindBot: 2, KindLate: 1},
				Valid:          7,
				InvalidBot:     2,
				Expected: map[AdCountryMinute]int64{
					{"ad-000001", "US", m0}:               2,
					{"ad-000001", "US", m1}:               1,
					{"ad-000002", "DE", m0}:               1,
					{"ad-000002", "FR", m0}:               1,
					{"ad-000009", "US", m0}:               1,
					{"ad-000003", "JP", m0 - 60*minuteMs}: 1,
				},
				Invalid: map[AdCountryMinute]int64{
					{"ad-000001", "US", m0}: 1,
					{"ad-000001", "GB", m0}: 1,
				},
			},
		},
		{
			name: "bursts",
			ledger: lines(
				// Group 1: 7 distinct clicks (one resent) on ad 4 in one minute: 5 valid, 2 not.
				"lg-r-10.b1\tad-000004\tBR\t1772366400001\tburst",
				"lg-r-11.b1\tad-000004\tBR\t1772366400002\tburst",
				"lg-r-12.b1\tad-000004\tBR\t1772366400003\tburst",
				"lg-r-13.b1\tad-000004\tBR\t1772366400004\tburst",
				"lg-r-14.b1\tad-000004\tBR\t1772366400005\tburst",
				"lg-r-15.b1\tad-000004\tBR\t1772366400006\tburst",
				"lg-r-16.b1\tad-000004\tBR\t1772366400007\tburst",
				"lg-r-16.b1\tad-000004\tBR\t1772366400007\tburst",
				// Group 2, another IP on the same ad and minute: 3 clicks, all valid.
				"lg-r-20.b2\tad-000004\tBR\t1772366400010\tburst",
				"lg-r-21.b2\tad-000004\tBR\t1772366400011\tburst",
				"lg-r-22.b2\tad-000004\tBR\t1772366400012\tburst",
				// Without a group in the id: grouped by ad, country and minute.
				"x1\tad-000005\tIN\t1772366400000\tburst",
				"x2\tad-000005\tIN\t1772366400000\tburst",
				"x3\tad-000005\tIN\t1772366400000\tburst",
				"x4\tad-000005\tIN\t1772366400000\tburst",
				"x5\tad-000005\tIN\t1772366400000\tburst",
				"x6\tad-000005\tIN\t1772366400000\tburst",
				"x7\tad-000005\tIN\t1772366460000\tburst", // next minute
				"u1\tad-000004\tBR\t1772366400000\tunique",
			),
			want: LedgerSummary{
				Lines:          19,
				LinesByKind:    map[Kind]int64{KindBurst: 18, KindUnique: 1},
				Distinct:       18,
				DuplicateLines: 1,
				DistinctByKind: map[Kind]int64{KindBurst: 17, KindUnique: 1},
				Valid:          15, // 5 + 3 + 5 + 1 + 1
				InvalidBurst:   3,  // 2 + 1
				Expected: map[AdCountryMinute]int64{
					{"ad-000004", "BR", m0}: 9,
					{"ad-000005", "IN", m0}: 5,
					{"ad-000005", "IN", m1}: 1,
				},
				Invalid: map[AdCountryMinute]int64{
					{"ad-000004", "BR", m0}: 2,
					{"ad-000005", "IN", m0}: 1,
				},
			},
		},
		{
			name:   "redirect lines without country",
			ledger: lines("lg-r-1\tad-000001\t\t1772366400100\tunique", "lg-r-1\tad-000001\t\t1772366400100\tduplicate"),
			want: LedgerSummary{
				Lines: 2, LinesByKind: map[Kind]int64{KindUnique: 1, KindDuplicate: 1},
				Distinct: 1, DuplicateLines: 1, DistinctByKind: map[Kind]int64{KindUnique: 1}, Valid: 1,
				Expected: map[AdCountryMinute]int64{{"ad-000001", "", m0}: 1},
			},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := SummarizeLedger(strings.NewReader(tt.ledger))
			if err != nil {
				t.Fatal(err)
			}
			if diff := cmp.Diff(tt.want, got, cmpopts.EquateEmpty()); diff != "" {
				t.Errorf("SummarizeLedger (-want +got):\n%s", diff)
			}
		})
	}
}

func TestSummarizeLedgerErrors(t *testing.T) {
	for _, ledger := range []string{
		"lg-r-1\tad-000001\tUS\t1772366400100\n",
		"lg-r-1\tad-000001\tUS\t1772366400100\tunique\textra\n",
		"lg-r-1\tad-000001\tUS\tsoon\tunique\n",
		"lg-r-1\tad-000001\tUS\t1772366400100\tgood\n",
		"\tad-000001\tUS\t1772366400100\tunique\n",
	} {
		if _, err := SummarizeLedger(strings.NewReader(ledger)); err == nil {
			t.Errorf("SummarizeLedger(%q) succeeded, want an error", ledger)
		}
	}
}

func lines(ls ...string) string {
	return strings.Join(ls, "\n") + "\n"
}
