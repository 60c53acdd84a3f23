package main

import (
	"bufio"
	"fmt"
	"os"

	"github.com/uncloud-mesh/uncloud/tun"
)

type keygenCmd struct{}

func (keygenCmd) Help() string {
	return "Prints a private key and its public key in the config file's syntax. The private key is a secret: put it only in the machine's own config file (mode 0600)."
}

func (keygenCmd) Run() error {
	priv, err := tun.GeneratePrivateKey()
	if err != nil {
		return err
	}
	fmt.Printf("PrivateKey = %s\nPublicKey = %s\n", priv, priv.PublicKey())
	return nil
}

type pubkeyCmd struct{}

func (pubkeyCmd) Help() string {
	return "Example: grep PrivateKey machine.conf | cut -d= -f2- | uncloud pubkey"
}

func (pubkeyCmd) Run() error {
	line, err := bufio.NewReader(os.Stdin).ReadString('\n')
	if err != nil && line == "" {
		return fmt.Errorf("read private key from stdin: %w", err)
	}
	priv, err := tun.ParseKey(line)
	if err != nil {
		return fmt.Errorf("private key on stdin: %w", err)
	}
	fmt.Println(priv.PublicKey())
	return nil
}
