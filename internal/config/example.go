package config

import _ "embed"

// Example is the commented example config `holdfast config init` writes. It
// passes `holdfast config check`.
//
//go:embed example.yaml
var Example []byte
