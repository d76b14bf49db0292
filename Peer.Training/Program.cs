// The `peer` program: see Cli/PeerCli.cs for its commands.
return Peer.Training.PeerCli.Run(args);
