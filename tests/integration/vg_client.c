/*
 * vg_client.c - run by tests/valgrind.sh under memcheck with sheaf as the
 * program's malloc (--soname-synonyms=somalloc=nouserintercepts).
 *
 *   vg_client clean   allocates, uses, frees, rcu_free()s and reads the
 *                     rcu_free()'d object before the grace period: no error
 *   vg_client uaf     reads a block after free(): memcheck must report it
 *   vg_client rcu     reads an rcu_free()'d object after rcu_free_barrier():
 *                     memcheck must report it
 *   vg_client leak    leaks a block: memcheck's leak check must find it
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "sheaf.h"
#include "sheaf/rcu.h"

struct node {
	int value;
	struct rcu_ptr rp;
};

int main(int argc, char **argv)
{
	const char *mode = argc > 1 ? argv[1] : "clean";
	volatile int sink = 0;
	if (!strcmp(mode, "clean")) {
		for (int i = 0; i < 1000; i++) {
			char *p = malloc((size_t)(i % 300) + 1);
			memset(p, 1, (size_t)(i % 300) + 1);
			p = realloc(p, 5000);
			free(p);
		}
		void *big = calloc(1, 200000);
		free(big);
		struct node *n = malloc(sizeof(*n));
		n->value = 42;
		rcu_free(n, rp);
		sink += n->value;   /* still inside the grace period: allowed */
		rcu_free_barrier();
	} else if (!strcmp(mode, "uaf")) {
		int *p = malloc(64);
		p[0] = 7;
		free(p);
		sink += p[0];       /* use after free */
	} else if (!strcmp(mode, "rcu")) {
		struct node *n = malloc(sizeof(*n));
		n->value = 42;
		rcu_free(n, rp);
		rcu_free_barrier();
		sink += n->value;   /* the grace period is over: freed */
	} else if (!strcmp(mode, "leak")) {
		/* sheaf's slab header points at the first object of its slab
		 * (and a large allocation's descriptor at its block), which
		 * memcheck counts as "still reachable": leak the second. */
		static void *keep;
		keep = malloc(12345);
		void *volatile p = malloc(12345);
		p = NULL;
		(void)p;
		(void)keep;
	}
	printf("vg_client %s done (%d)\n", mode, sink);
	return 0;
}
