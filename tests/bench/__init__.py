"""`make bench`: sqlprobe measured from outside its process against a fleet of throwaway MariaDB servers."""
