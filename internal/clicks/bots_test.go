package clicks

import (
	"strings"
	"testing"
)

func TestDefaultBotSubstrings(t *testing.T) {
	bots := DefaultBotSubstrings()
	isBot := func(ua string) bool {
		ua = strings.ToLower(ua)
		for _, b := range bots {
			if strings.Contains(ua, b) {
				return true
			}
		}
		return false
	}
	for _, ua := range []string{
		"Mozilla/5.0 (compatible; Googlebot/2.1; +http://www.google.com/bot.html)",
		"Mozilla/5.0 (compatible; bingbot/2.0; +http://www.bing.com/bingbot.htm)",
		"curl/8.5.0",
		"python-requests/2.31.0",
		"Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) HeadlessChrome/124.0.0.0 Safari/537.36",
		"Wget/1.21.4",
		"Go-http-client/1.1",
		"facebookexternalhit/1.1 (+http://www.facebook.com/externalhit_uatext.php)",
	} {
		if !isBot(ua) {
			t.Errorf("%q is not flagged", ua)
		}
	}
	for _, ua := range []string{
		"Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/124.0.0.0 Safari/537.36",
		"Mozilla/5.0 (iPhone; CPU iPhone OS 17_4 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.4 Mobile/15E148 Safari/604.1",
		"Mozilla/5.0 (Linux; Android 10; CUBOT X30) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/124.0.0.0 Mobile Safari/537.36",
		"Mozilla/5.0 (Windows NT 10.0; Win64; x64; rv:125.0) Gecko/20100101 Firefox/125.0",
	} {
		if isBot(ua) {
			t.Errorf("browser %q is flagged", ua)
		}
	}
}

func TestParseBotList(t *testing.T) {
	got, err := ParseBotList(strings.NewReader("# c\n\n  EvilBot \nscraper\n"))
	if err != nil || len(got) != 2 || got[0] != "evilbot" || got[1] != "scraper" {
		t.Fatalf("got %q, %v", got, err)
	}
	if _, err := ParseBotList(strings.NewReader("# only comments\n")); err == nil {
		t.Fatal("an empty list was accepted")
	}
}
