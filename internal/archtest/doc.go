// Package archtest holds no code: its test checks rules that span the module. Every
// package has a doc comment, and production code imports neither "testing" nor a
// test-support package (a package named *test).
package archtest
