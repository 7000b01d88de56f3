package main

import "errors"

func runNMEA(args []string, s stdio) error { return errors.New("not implemented yet") }
