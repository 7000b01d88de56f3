package main

import "errors"

func runDecode(args []string, s stdio) error { return errors.New("not implemented yet") }
