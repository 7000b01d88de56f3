package main

import "errors"

func runHook(args []string, s stdio) error { return errors.New("not implemented yet") }
