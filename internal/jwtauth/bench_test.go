package jwtauth

import (
	"testing"
)

func BenchmarkVerify(b *testing.B) {
	srv := newJWKSServer(b, rsaSigner(b), ecSigner(b), edSigner(b))
	tokens := map[string]string{
		"HS256": signHS(b, hmacKey, claims()),
		"RS256": signWith(b, rsaSigner(b), claims()),
		"ES256": signWith(b, ecSigner(b), claims()),
		"EdDSA": signWith(b, edSigner(b), claims()),
	}
	for _, alg := range []string{"HS256", "RS256", "ES256", "EdDSA"} {
		for _, cache := range []struct {
			name string
			size int
		}{{"cache", 0}, {"nocache", -1}} {
			b.Run(alg+"/"+cache.name, func(b *testing.B) {
				v := newVerifier(b, Config{HMACKey: hmacKey, JWKSURL: srv.URL, Now: newClock(t0).now, CacheSize: cache.size})
				tok := tokens[alg]
				b.ReportAllocs()
				for b.Loop() {
					if _, err := v.Verify(b.Context(), tok); err != nil {
						b.Fatal(err)
					}
				}
			})
		}
	}
}
