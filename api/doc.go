// Package api holds pedal's OpenAPI 3.1 description; its test validates it.
package api
