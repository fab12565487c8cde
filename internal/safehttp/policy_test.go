package safehttp

import (
	"errors"
	"net/netip"
	"net/url"
	"testing"
)

func TestClassify(t *testing.T) {
	for _, tt := range []struct {
		addr, reason string
	}{
		{"93.184.215.14", ""},
		{"8.8.8.8", ""},
		{"172.15.255.255", ""},
		{"172.32.0.0", ""},
		{"100.63.255.255", ""},
		{"100.128.0.0", ""},
		{"2606:4700::1111", ""},
		{"::ffff:93.184.215.14", ""},
		{"64:ff9b::5db8:d70e", ""}, // NAT64 of a public address
		{"2002:5db8:d70e::1", ""},  // 6to4 of a public address
		{"0.1.2.3", "this_network"},
		{"0.0.0.0", "this_network"},
		{"10.0.0.1", "private"},
		{"100.64.0.1", "cgnat"},
		{"100.127.255.254", "cgnat"},
		{"100.100.100.200", "cgnat"},
		{"127.0.0.1", "loopback"},
		{"127.255.255.255", "loopback"},
		{"169.254.169.254", "cloud_metadata"},
		{"169.254.1.1", "link_local"},
		{"172.16.0.1", "private"},
		{"172.31.255.255", "private"},
		{"192.0.0.8", "ietf_protocol"},
		{"192.0.0.170", "ietf_protocol"},
		{"192.0.2.1", "documentation"},
		{"192.88.99.1", "6to4_relay"},
		{"192.168.65.254", "private"},
		{"198.18.0.1", "benchmarking"},
		{"198.19.255.255", "benchmarking"},
		{"198.51.100.7", "documentation"},
		{"203.0.113.9", "documentation"},
		{"224.0.0.1", "multicast"},
		{"239.255.255.250", "multicast"},
		{"240.0.0.1", "reserved"},
		{"255.255.255.255", "broadcast"},
		{"168.63.129.16", "cloud_metadata"},
		{"::", "unspecified"},
		{"::1", "loopback"},
		{"::ffff:127.0.0.1", "loopback"},
		{"::ffff:a9fe:a9fe", "cloud_metadata"},
		{"::127.0.0.1", "loopback"},
		{"::10.0.0.1", "private"},
		{"64:ff9b::7f00:1", "loopback"},
		{"64:ff9b:1::a9fe:a9fe", "nat64_local"},
		{"2002:7f00:1::", "loopback"},
		{"2002:a9fe:a9fe::1", "cloud_metadata"},
		{"2001:0:4136:e378:8000:63bf:3fff:fdd2", "documentation"}, // Teredo, client 192.0.2.45
		{"2001:0:7f00:1:8000:63bf:3fff:fdd2", "loopback"},         // Teredo, server 127.0.0.1
		{"2001:2::1", "ietf_protocol"},
		{"2001:db8::1", "documentation"},
		{"3fff::1", "documentation"},
		{"5f00::1", "srv6_sid"},
		{"100::1", "discard"},
		{"fc00::1", "unique_local"},
		{"fd00:ec2::254", "unique_local"},
		{"fe80::1", "link_local"},
		{"fec0::1", "site_local"},
		{"ff02::1", "multicast"},
		{"4000::1", "not_global_unicast"},
		{"::ffff:0:7f00:1", "not_global_unicast"}, // SIIT-translated, outside 2000::/3
	} {
		a := netip.MustParseAddr(tt.addr)
		if got := classify(a); got != tt.reason {
			t.Errorf("classify(%s) = %q, want %q", tt.addr, got, tt.reason)
		}
	}
}

func TestCheckAddrAllowDeny(t *testing.T) {
	p := newPolicy([]netip.Prefix{netip.MustParsePrefix("10.1.0.0/16")}, []netip.Prefix{netip.MustParsePrefix("93.184.0.0/16")}, nil)
	for _, tt := range []struct {
		addr   string
		reason string
	}{
		{"10.1.2.3", ""},                      // allowed by AllowCIDRs
		{"::ffff:10.1.2.3", ""},               // also when mapped
		{"10.2.0.1", "private"},               // outside the exception
		{"93.184.215.14", "denied_cidr"},      // added to the deny list
		{"64:ff9b::5db8:d70e", "denied_cidr"}, // NAT64 of a denied address
		{"8.8.8.8", ""},
		{"fe80::1%eth0", "zone"},
	} {
		err := p.checkAddr("h", netip.MustParseAddr(tt.addr))
		var be *BlockedError
		switch {
		case tt.reason == "" && err != nil:
			t.Errorf("checkAddr(%s) = %v, want allowed", tt.addr, err)
		case tt.reason != "" && (!errors.As(err, &be) || be.Reason != tt.reason || !errors.Is(err, ErrBlocked)):
			t.Errorf("checkAddr(%s) = %v, want %s", tt.addr, err, tt.reason)
		}
	}
}

func TestCheckURL(t *testing.T) {
	p := newPolicy(nil, nil, nil)
	for _, tt := range []struct {
		raw    string
		host   string
		port   uint16
		reason string
	}{
		{"https://example.com/", "example.com", 443, ""},
		{"HTTPS://EXAMPLE.COM/", "example.com", 443, ""},
		{"http://example.com./x", "example.com", 80, ""},
		{"http://example.com:00080/", "example.com", 80, ""},
		{"http://bücher.example/", "xn--bcher-kva.example", 80, ""},
		{"http://[2606:4700::1111]/", "2606:4700::1111", 80, ""},
		{"http://172.15.255.255/", "172.15.255.255", 80, ""},
		{"http://example.com:0/", "", 0, "port"},
		{"http://example.com:22/", "", 0, "port"},
		{"http://example.com:8080/", "", 0, "port"},
		{"http://example.com:/", "", 0, "port"},
		{"ftp://example.com/", "", 0, "scheme"},
		{"file:///etc/passwd", "", 0, "scheme"},
		{"gopher://127.0.0.1:6379/_INFO", "", 0, "scheme"},
		{"data:text/html,x", "", 0, "scheme"},
		{"ws://example.com/", "", 0, "scheme"},
		{"//127.0.0.1/", "", 0, "scheme"},
		{"http:/127.0.0.1/", "", 0, "host"},
		{"http://user:pass@example.com/", "", 0, "userinfo"},
		{"http://evil.com@127.0.0.1/", "", 0, "userinfo"},
		{"http://evil.com%2F@127.0.0.1/", "", 0, "userinfo"},
		{"http://127.0.0.1/", "", 0, "loopback"},
		{"http://0.0.0.0/", "", 0, "this_network"},
		{"http://127.0.1/", "", 0, "non_canonical_ip"},
		{"http://0x7f000001/", "", 0, "non_canonical_ip"},
		{"http://0177.0.0.1/", "", 0, "non_canonical_ip"},
		{"http://0x7f.1/", "", 0, "non_canonical_ip"},
		{"http://0/", "", 0, "non_canonical_ip"},
		{"http://3232235777/", "", 0, "non_canonical_ip"},
		{"http://10.1/", "", 0, "non_canonical_ip"},
		{"http://0xa9fea9fe/", "", 0, "non_canonical_ip"},
		{"http://0251.254.169.254/", "", 0, "non_canonical_ip"},
		{"http://0x7f.0.0.1./", "", 0, "non_canonical_ip"},
		{"http://1.2.3.4.5/", "", 0, "non_canonical_ip"},
		{"http://[::ffff:127.0.0.1]/", "", 0, "loopback"},
		{"http://[0:0:0:0:0:0:0:1]/", "", 0, "loopback"},
		{"http://[fe80::1%25eth0]/", "", 0, "zone"},
		{"http://127。0。0。1/", "", 0, "loopback"},
		{"http://１２７.０.０.１/", "", 0, "loopback"},
		{"http://xn--localhost-.test/", "", 0, "host"},
		{"http://a..b/", "", 0, "host"},
	} {
		u, err := url.Parse(tt.raw)
		if err != nil {
			t.Errorf("url.Parse(%q): %v", tt.raw, err)
			continue
		}
		host, port, err := p.checkURL(u)
		if tt.reason == "" {
			if err != nil || host != tt.host || port != tt.port {
				t.Errorf("checkURL(%q) = %q, %d, %v; want %q, %d", tt.raw, host, port, err, tt.host, tt.port)
			}
			continue
		}
		var be *BlockedError
		if !errors.As(err, &be) || be.Reason != tt.reason || !errors.Is(err, ErrBlocked) {
			t.Errorf("checkURL(%q) = %q, %v; want refusal %q", tt.raw, host, err, tt.reason)
		}
	}
}

func TestPortsConfigurable(t *testing.T) {
	p := newPolicy(nil, nil, []uint16{8080})
	for raw, ok := range map[string]bool{"http://example.com:8080/": true, "http://example.com/": false, "https://example.com/": false} {
		u, _ := url.Parse(raw)
		if _, _, err := p.checkURL(u); (err == nil) != ok {
			t.Errorf("ports {8080}: checkURL(%q) = %v", raw, err)
		}
	}
}

func TestValidate(t *testing.T) {
	for raw, reason := range map[string]string{
		"https://example.com/a?b":      "",
		" http://127.0.0.1/":           "invalid_url",
		"http://evil.com\\@127.0.0.1/": "invalid_url",
		"http://127.0.0.1:80:80/":      "invalid_url",
		"http://[::1]x/":               "invalid_url",
		"http://127.0.0.1/":            "loopback",
		"http://example.com:8080/":     "port",
		"ftp://example.com/":           "scheme",
	} {
		u, err := Validate(raw, Config{})
		var be *BlockedError
		switch {
		case reason == "" && (err != nil || u == nil):
			t.Errorf("Validate(%q) = %v", raw, err)
		case reason != "" && (!errors.As(err, &be) || be.Reason != reason || !errors.Is(err, ErrBlocked)):
			t.Errorf("Validate(%q) = %v, want refusal %q", raw, err, reason)
		}
	}
	if _, err := Validate("http://example.com:8080/", Config{AllowedPorts: []uint16{8080}}); err != nil {
		t.Errorf("Validate with port 8080 allowed: %v", err)
	}
}
