package redisconn

import "testing"

func TestParseURL(t *testing.T) {
	for raw, want := range map[string]Config{
		"redis://127.0.0.1:6380/2":    {Addr: "127.0.0.1:6380", DB: 2},
		"redis://cache.internal":      {Addr: "cache.internal:6379"},
		"redis://u:p@127.0.0.1:6379/": {Addr: "127.0.0.1:6379", Username: "u", Password: "p"},
	} {
		if got, err := ParseURL(raw); err != nil || got != want {
			t.Errorf("ParseURL(%q) = %+v, %v; want %+v", raw, got, err, want)
		}
	}
	for _, raw := range []string{"http://h:1", "redis://", "redis://h:1/zero", "redis://h:1/-1"} {
		if _, err := ParseURL(raw); err == nil {
			t.Errorf("ParseURL(%q) accepted", raw)
		}
	}
	if _, err := New(Config{}); err == nil {
		t.Error("New without an address")
	}
}
