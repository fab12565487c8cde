package clicks

import (
	"bufio"
	_ "embed"
	"fmt"
	"io"
	"strings"
)

//go:embed bots.txt
var defaultBots string

// DefaultBotSubstrings returns the bot list shipped in the binary: user-agent
// substrings, lower case, that mark a click as invalid traffic.
func DefaultBotSubstrings() []string {
	s, err := ParseBotList(strings.NewReader(defaultBots))
	if err != nil {
		panic(err) // the embedded list is tested
	}
	return s
}

// ParseBotList reads a bot list: one substring per line, blank lines and lines
// starting with # ignored. Substrings are lower-cased.
func ParseBotList(r io.Reader) ([]string, error) {
	var out []string
	sc := bufio.NewScanner(r)
	for line := 1; sc.Scan(); line++ {
		s := strings.TrimSpace(sc.Text())
		if s == "" || strings.HasPrefix(s, "#") {
			continue
		}
		if len(s) > MaxUserAgentLen {
			return nil, fmt.Errorf("line %d: substring longer than %d bytes", line, MaxUserAgentLen)
		}
		out = append(out, strings.ToLower(s))
	}
	if err := sc.Err(); err != nil {
		return nil, err
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("no substrings")
	}
	return out, nil
}
