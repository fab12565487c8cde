package clicks

import "testing"

func TestNormalizeCountry(t *testing.T) {
	for in, want := range map[string]string{"de": "DE", "Us": "US", "US": "US", "ZZ": "", "u": "", "USA": "", "1A": ""} {
		got, ok := NormalizeCountry(in)
		if got != want || ok != (want != "") {
			t.Errorf("NormalizeCountry(%q) = %q, %v; want %q", in, got, ok, want)
		}
	}
}
