package extract

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
)

// reportFields are the fields the agreement report covers, and the check
// names (see peerChecks) that stand for each of them in the peers'
// expectations.
var reportFields = []struct {
	name   string
	checks []string
}{
	{"title", []string{"title", "best_title", "og:title"}},
	{"description", []string{"description", "result.description", "og:description"}},
	{"canonical_url", []string{"url", "canonical_url", "canonical", "og:url"}},
	{"image", []string{"image", "images", "images.owner_suggested", "og:image"}},
	{"site_name", []string{"publisher", "site_name", "og:site_name"}},
}

func reportField(check string) string {
	for _, f := range reportFields {
		for _, c := range f.checks {
			if c == check {
				return f.name
			}
		}
	}
	return ""
}

// peerExpectation is one comparison, exported for bench/metascraper so that
// metascraper is judged against the same expectations with the same
// normalisation: Norm names what both sides' values go through before
// comparing ("typographic", "looseURL" or "").
type peerExpectation struct {
	ID     string `json:"id"`
	Source string `json:"source"`
	Base   string `json:"base"`
	Field  string `json:"field"`
	Norm   string `json:"norm"`
	Want   string `json:"want"`
	Got    string `json:"got"`
	Agree  bool   `json:"agree"`
}

// TestPeerAgreementBySource logs, per peer project and per field (title,
// description, canonical URL, image, site name), how many of the peer's
// expectations our extractor agrees with, deviations recorded in
// peerDeviations counted as disagreements. Unfurl's image expectation (the
// whole images[] with sizes and alt) is reduced to the first image's URL,
// the one comparison a single-image extractor such as metascraper can pass.
// With PEDAL_PEERS_EXPECT=file it also writes the comparisons as JSON for
// bench/metascraper/bench.mjs.
func TestPeerAgreementBySource(t *testing.T) {
	if _, err := os.Stat(filepath.Join(peersDir, "index.json")); err != nil {
		t.Skipf("peer fixtures not found at %s (they live beside the repository, not in it): %v", peersDir, err)
	}
	var index []struct {
		ID string `json:"id"`
	}
	readJSON(t, filepath.Join(peersDir, "index.json"), &index)

	type tally struct{ ok, n int }
	bySource := map[string]map[string]*tally{}
	var sources []string
	var exported []peerExpectation
	for _, row := range index {
		dir := filepath.Join(peersDir, filepath.FromSlash(row.ID))
		var pc peerCase
		readJSON(t, filepath.Join(dir, "case.json"), &pc)
		source, _, _ := strings.Cut(row.ID, "/")
		if bySource[source] == nil {
			bySource[source] = map[string]*tally{}
			sources = append(sources, source)
		}
		for _, base := range requestURLs(pc) {
			md := extractPeer(t, dir, pc, base)
			for _, c := range peerChecks(t, dir, pc, base, md) {
				field := reportField(c.field)
				if field == "" {
					continue
				}
				want, got := c.want, c.got
				if c.field == "images" { // unfurl: first image's URL
					want, got = firstURL(want), firstURL(got)
				}
				norm := ""
				if source == "metascraper" {
					norm = "typographic"
					if field == "canonical_url" || field == "image" {
						norm = "looseURL"
					}
				}
				agree := reflect.DeepEqual(want, got)
				tl := bySource[source][field]
				if tl == nil {
					tl = &tally{}
					bySource[source][field] = tl
				}
				tl.n++
				if agree {
					tl.ok++
				}
				ws, _ := want.(string)
				gs, _ := got.(string)
				exported = append(exported, peerExpectation{ID: row.ID, Source: source, Base: base, Field: field,
					Norm: norm, Want: ws, Got: gs, Agree: agree})
			}
		}
	}

	var b strings.Builder
	fmt.Fprintf(&b, "field-level agreement with the peers' expectations (agreeing/checks):\n%-14s", "source")
	for _, f := range reportFields {
		fmt.Fprintf(&b, " %13s", f.name)
	}
	b.WriteString("\n")
	total := map[string]*tally{}
	for _, s := range append(sources, "all") {
		fmt.Fprintf(&b, "%-14s", s)
		for _, f := range reportFields {
			tl := bySource[s][f.name]
			if s == "all" {
				tl = total[f.name]
			} else if tl != nil {
				if total[f.name] == nil {
					total[f.name] = &tally{}
				}
				total[f.name].ok += tl.ok
				total[f.name].n += tl.n
			}
			if tl == nil || tl.n == 0 {
				fmt.Fprintf(&b, " %13s", "-")
				continue
			}
			fmt.Fprintf(&b, " %13s", fmt.Sprintf("%d/%d %3.0f%%", tl.ok, tl.n, 100*float64(tl.ok)/float64(tl.n)))
		}
		b.WriteString("\n")
	}
	t.Log(b.String())

	if name := os.Getenv("PEDAL_PEERS_EXPECT"); name != "" {
		j, err := json.MarshalIndent(exported, "", " ")
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(name, j, 0o644); err != nil {
			t.Fatal(err)
		}
		t.Logf("wrote %d comparisons to %s", len(exported), name)
	}
}

// firstURL returns the URL of the first of a list of images.
func firstURL(v any) any {
	if imgs, ok := v.([]Image); ok && len(imgs) > 0 {
		return imgs[0].URL
	}
	return ""
}
