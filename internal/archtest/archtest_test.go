package archtest

import (
	"go/ast"
	"go/parser"
	"go/token"
	"io/fs"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
)

// packages returns, for each directory of the module holding Go code, its
// non-test files.
func packages(t *testing.T) map[string][]string {
	t.Helper()
	root, err := filepath.Abs("../..")
	if err != nil {
		t.Fatal(err)
	}
	pkgs := map[string][]string{}
	err = filepath.WalkDir(root, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() && (strings.HasPrefix(d.Name(), ".") || d.Name() == "testdata" || d.Name() == "pedal-data") {
			return filepath.SkipDir
		}
		if !d.IsDir() && strings.HasSuffix(path, ".go") && !strings.HasSuffix(path, "_test.go") {
			rel, _ := filepath.Rel(root, filepath.Dir(path))
			pkgs[rel] = append(pkgs[rel], path)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if len(pkgs) < 5 {
		t.Fatalf("found only %d packages under %s", len(pkgs), root)
	}
	return pkgs
}

func TestEveryPackageHasADocComment(t *testing.T) {
	for dir, files := range packages(t) {
		documented := false
		for _, f := range files {
			af, err := parser.ParseFile(token.NewFileSet(), f, nil, parser.PackageClauseOnly|parser.ParseComments)
			if err != nil {
				t.Fatal(err)
			}
			if af.Doc != nil && strings.TrimSpace(af.Doc.Text()) != "" {
				documented = true
			}
		}
		if !documented {
			t.Errorf("package %s has no doc comment", dir)
		}
	}
}

func TestProductionCodeImportsNoTestSupport(t *testing.T) {
	for dir, files := range packages(t) {
		if strings.HasSuffix(dir, "test") { // test-support packages themselves
			continue
		}
		for _, f := range files {
			af, err := parser.ParseFile(token.NewFileSet(), f, nil, parser.ImportsOnly)
			if err != nil {
				t.Fatal(err)
			}
			for _, imp := range af.Imports {
				path, _ := strconv.Unquote(imp.Path.Value)
				if path == "testing" || (strings.HasPrefix(path, "github.com/pedal-project/pedal/") && strings.HasSuffix(path, "test")) {
					t.Errorf("%s imports %s", f, path)
				}
			}
		}
	}
}

// TestOutboundHTTPOnlyThroughSafehttp: production code builds HTTP clients and
// transports only in safehttp, the one way to fetch a user-supplied URL; in
// loadgen, whose target is the operator's own pedal; and in gateway, whose
// upstreams are the operator's route configuration (admin API only), never a
// URL a user supplied. The package-level helpers (http.Get, http.DefaultClient,
// ...) are not used anywhere.
func TestOutboundHTTPOnlyThroughSafehttp(t *testing.T) {
	allowed := map[string]bool{"internal/safehttp": true, "internal/loadgen": true, "internal/gateway": true,
		"bench/gateway/openloop": true} // a load generator, like loadgen
	forbidden := map[string]bool{"Client": true, "Transport": true, "DefaultClient": true, "DefaultTransport": true,
		"Get": true, "Head": true, "Post": true, "PostForm": true}
	for dir, files := range packages(t) {
		for _, f := range files {
			af, err := parser.ParseFile(token.NewFileSet(), f, nil, 0)
			if err != nil {
				t.Fatal(err)
			}
			httpName := ""
			for _, imp := range af.Imports {
				if path, _ := strconv.Unquote(imp.Path.Value); path == "net/http" {
					httpName = "http"
					if imp.Name != nil {
						httpName = imp.Name.Name
					}
				}
			}
			if httpName == "" {
				continue
			}
			ast.Inspect(af, func(n ast.Node) bool {
				sel, ok := n.(*ast.SelectorExpr)
				if !ok {
					return true
				}
				if id, ok := sel.X.(*ast.Ident); ok && id.Name == httpName && forbidden[sel.Sel.Name] && !allowed[dir] {
					t.Errorf("%s uses http.%s: outbound requests go through internal/safehttp", f, sel.Sel.Name)
				}
				return true
			})
		}
	}
}
