package main

import (
	"fmt"
	"os"
	"strings"

	"github.com/spf13/cobra"
)

// tokenEnv is the environment variable the client commands read an API token
// from when --token is not given.
const tokenEnv = "HOLDFAST_TOKEN"

// tokenFlags adds --token and --token-file to c and returns what finds the
// API token: --token, else $HOLDFAST_TOKEN, else the first line of
// --token-file, else "" (a node without security needs none).
func tokenFlags(c *cobra.Command) func() (string, error) {
	var token, file string
	c.Flags().StringVar(&token, "token", "", "API token (role read) for a node with security on; else $"+tokenEnv+", else --token-file")
	c.Flags().StringVar(&file, "token-file", "", "file holding the API token (used when neither --token nor $"+tokenEnv+" is set)")
	return func() (string, error) {
		if token != "" {
			return token, nil
		}
		if t := strings.TrimSpace(os.Getenv(tokenEnv)); t != "" {
			return t, nil
		}
		if file == "" {
			return "", nil
		}
		b, err := os.ReadFile(file)
		if err != nil {
			return "", fmt.Errorf("--token-file: %w", err)
		}
		t, _, _ := strings.Cut(string(b), "\n")
		if t = strings.TrimSpace(t); t == "" {
			return "", fmt.Errorf("--token-file %s is empty", file)
		}
		return t, nil
	}
}
