package clicks

// iso3166 holds the officially assigned ISO 3166-1 alpha-2 codes (249), as a set
// indexed by (first letter, second letter).
var iso3166 = func() (set [26][26]bool) {
	const codes = "AD AE AF AG AI AL AM AO AQ AR AS AT AU AW AX AZ BA BB BD BE BF BG BH BI BJ BL BM BN BO BQ BR BS BT BV BW BY BZ " +
		"CA CC CD CF CG CH CI CK CL CM CN CO CR CU CV CW CX CY CZ DE DJ DK DM DO DZ EC EE EG EH ER ES ET FI FJ FK FM FO FR " +
		"GA GB GD GE GF GG GH GI GL GM GN GP GQ GR GS GT GU GW GY HK HM HN HR HT HU ID IE IL IM IN IO IQ IR IS IT JE JM JO JP " +
		"KE KG KH KI KM KN KP KR KW KY KZ LA LB LC LI LK LR LS LT LU LV LY MA MC MD ME MF MG MH MK ML MM MN MO MP MQ MR MS MT MU MV MW MX MY MZ " +
		"NA NC NE NF NG NI NL NO NP NR NU NZ OM PA PE PF PG PH PK PL PM PN PR PS PT PW PY QA RE RO RS RU RW " +
		"SA SB SC SD SE SG SH SI SJ SK SL SM SN SO SR SS ST SV SX SY SZ TC TD TF TG TH TJ TK TL TM TN TO TR TT TV TW TZ " +
		"UA UG UM US UY UZ VA VC VE VG VI VN VU WF WS YE YT ZA ZM ZW"
	for i := 0; i+1 < len(codes); i += 3 {
		set[codes[i]-'A'][codes[i+1]-'A'] = true
	}
	return set
}()

// normalizeCountry returns the upper-case code and true when b is an assigned
// ISO 3166-1 alpha-2 code in either case.
func normalizeCountry(b []byte) ([2]byte, bool) {
	if len(b) != 2 {
		return [2]byte{}, false
	}
	c := [2]byte{b[0] &^ 0x20, b[1] &^ 0x20} // ASCII upper-case
	if c[0] < 'A' || c[0] > 'Z' || c[1] < 'A' || c[1] > 'Z' {
		return [2]byte{}, false
	}
	return c, iso3166[c[0]-'A'][c[1]-'A']
}

// NormalizeCountry returns the upper-case code and true when s is an assigned
// ISO 3166-1 alpha-2 code in either case, as the ingestion API accepts it.
func NormalizeCountry(s string) (string, bool) {
	c, ok := normalizeCountry([]byte(s))
	if !ok {
		return "", false
	}
	return string(c[:]), true
}
